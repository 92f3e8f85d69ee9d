package org.edgederm.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test

class InferenceTest {
    @Test
    fun threadBounds() {
        assertEquals(1, Threads.max(1))
        assertEquals(1, Threads.max(0)) // a bogus core count still offers one thread
        assertEquals(6, Threads.max(6))
        assertEquals(Threads.MAX, Threads.max(64))
        assertEquals(1, Threads.clamp(0, 8))
        assertEquals(1, Threads.clamp(-3, 8))
        assertEquals(8, Threads.clamp(100, 8))
        assertEquals(2, Threads.clamp(4, 2))
        assertEquals(4, Threads.default(8))
        assertEquals(2, Threads.default(2))
    }

    @Test
    fun settingsRoundTripAndClamp() {
        val s = InferenceSettings(Accelerator.GPU, 3)
        assertEquals("gpu:3", s.encode())
        assertEquals(s, InferenceSettings.decode(s.encode(), 8))
        assertEquals(InferenceSettings(Accelerator.GPU, 2), InferenceSettings.decode("gpu:6", 2))
        assertEquals(InferenceSettings.default(8), InferenceSettings.decode(null, 8))
        assertEquals(InferenceSettings.default(8), InferenceSettings.decode("npu:4", 8))
        assertEquals(InferenceSettings.default(8), InferenceSettings.decode("cpu:many", 8))
        assertEquals(InferenceSettings(Accelerator.CPU, 4), InferenceSettings.default(8))
    }

    @Test
    fun gpuOnlyWhereSupported() {
        val gpu = InferenceSettings(Accelerator.GPU, 4)
        val ok = DelegatePolicy.plan(gpu, gpuSupported = true, cores = 8)
        assertEquals(Accelerator.GPU, ok.accelerator)
        assertFalse(ok.fellBack)
        assertEquals("GPU delegate", ok.describe())

        val unsupported = DelegatePolicy.plan(gpu, gpuSupported = false, cores = 8)
        assertEquals(Accelerator.CPU, unsupported.accelerator)
        assertTrue(unsupported.fellBack)
        assertTrue(unsupported.describe(), unsupported.describe().startsWith("CPU, 4 threads (GPU not used: "))
        assertTrue(unsupported.describe().contains("compatibility list"))

        val cpu = DelegatePolicy.plan(InferenceSettings(Accelerator.CPU, 12), gpuSupported = true, cores = 2)
        assertEquals(Accelerator.CPU, cpu.accelerator)
        assertEquals(2, cpu.threads)
        assertNull(cpu.fallbackReason)
        assertEquals("CPU, 1 thread", DelegatePolicy.plan(InferenceSettings(Accelerator.CPU, 1), true, 8).describe())
    }

    @Test
    fun gpuFailureFallsBackToCpu() {
        val plan = DelegatePolicy.plan(InferenceSettings(Accelerator.GPU, 2), gpuSupported = true, cores = 8)
        val fallback = DelegatePolicy.afterGpuFailure(plan, "OpenCL library not found")
        assertEquals(Accelerator.CPU, fallback.accelerator)
        assertEquals(2, fallback.threads)
        assertTrue(fallback.describe().contains("OpenCL library not found"))
    }

    @Test(expected = IllegalArgumentException::class)
    fun onlyGpuPlansFallBack() {
        DelegatePolicy.afterGpuFailure(DelegatePolicy.plan(InferenceSettings(Accelerator.CPU, 2), true, 8), "x")
    }

    @Test
    fun timingIsSplitIntoStages() {
        val ticks = longArrayOf(1_000_000L, 13_400_000L, 58_400_000L, 58_900_000L)
        var i = 0
        val timing = InferenceTiming.measure({ ticks[i++] }) { mark ->
            mark() // preprocessing done
            mark() // inference done
            mark() // postprocessing done
        }
        assertEquals(12_400_000L, timing.preprocessNanos)
        assertEquals(45_000_000L, timing.inferenceNanos)
        assertEquals(500_000L, timing.postprocessNanos)
        assertEquals(57_900_000L, timing.totalNanos)
        assertEquals("preprocessing 12 ms + inference 45 ms + postprocessing 0.5 ms = 58 ms", timing.format())
    }

    @Test(expected = IllegalArgumentException::class)
    fun timingNeedsThreeMarks() {
        var t = 0L
        InferenceTiming.measure({ t++ }) { mark -> mark() }
    }

    @Test
    fun bytesAreFormattedInDecimalUnits() {
        assertEquals("0 B", ModelInfo.formatBytes(0))
        assertEquals("999 B", ModelInfo.formatBytes(999))
        assertEquals("12.3 kB", ModelInfo.formatBytes(12_345))
        assertEquals("2.45 MB", ModelInfo.formatBytes(2_450_000))
        assertEquals("14.00 MB", ModelInfo.formatBytes(14_000_000))
    }

    @Test
    fun modelLineShowsVariantAndSize() {
        val line = ModelInfo.describe(TestData.meta(), 2_450_000)
        assertEquals("Model: mobilenet_v2, int8 variant, 2.45 MB, 4 classes, 4x4 nearest; " +
            "98.0 % top-1 agreement with the trained model.", line)
    }
}
