package org.edgederm.demo.core

import java.nio.ByteOrder
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

class PreprocessTest {
    private fun gray(v: Int) = Preprocess.argb(v, v, v)

    @Test
    fun nearestPicksPixelCentres() {
        // 4x2 image of values 0..7 -> 2x2: x sources floor((x + .5) * 4 / 2) = 1, 3; y = 0, 1.
        val src = IntArray(8) { gray(it) }
        val out = Preprocess.resizeNearest(src, 4, 2, 2, 2)
        assertArrayEquals(intArrayOf(gray(1), gray(3), gray(5), gray(7)), out)
        // Upscaling 2x1 -> 4x1 repeats each pixel twice.
        val up = Preprocess.resizeNearest(intArrayOf(gray(10), gray(20)), 2, 1, 4, 1)
        assertArrayEquals(intArrayOf(gray(10), gray(10), gray(20), gray(20)), up)
    }

    @Test
    fun padKeepsAspectOnBlack() {
        // A white 4x2 image padded into 4x4: rows 0 and 3 black, rows 1-2 white.
        val src = IntArray(8) { gray(255) }
        val out = Preprocess.resizePad(src, 4, 2, 4, 4)
        val black = 0xFF shl 24
        for (x in 0 until 4) {
            assertEquals(black, out[x])
            assertEquals(gray(255), out[4 + x])
            assertEquals(gray(255), out[8 + x])
            assertEquals(black, out[12 + x])
        }
    }

    @Test
    fun pillowBilinearAveragesOnDownscale() {
        // Values from Pillow 11: Image.fromarray(...).resize(..., Image.BILINEAR).
        // Downscale: the filter widens to 2 source pixels per side (weights .75, .75, .25 for the first).
        val src = intArrayOf(gray(0), gray(100), gray(0), gray(100))
        assertArrayEquals(intArrayOf(gray(43), gray(57)), PillowBilinear.resize(src, 4, 1, 2, 1))
        val up = intArrayOf(gray(0), gray(100), gray(200))
        assertArrayEquals(intArrayOf(gray(0), gray(40), gray(100), gray(160), gray(200)), PillowBilinear.resize(up, 3, 1, 5, 1))
        // A constant image stays constant at any size.
        val flat = IntArray(35) { Preprocess.argb(10, 200, 77) }
        val out = PillowBilinear.resize(flat, 7, 5, 3, 9)
        for (p in out) assertEquals(Preprocess.argb(10, 200, 77), p)
    }

    @Test
    fun encodesUint8AndInt8AndFloat() {
        val pixels = IntArray(16) { Preprocess.argb(it, 128, 255) }
        val u8 = Preprocess.toTensor(pixels, TestData.meta().input)
        assertEquals(48, u8.remaining())
        assertEquals(3.toByte(), u8.get(9))
        assertEquals(128.toByte(), u8.get(10))
        assertEquals(255.toByte(), u8.get(11))

        val i8 = Preprocess.toTensor(pixels, TestData.meta(inputDtype = "int8", inputZeroPoint = -128).input)
        assertEquals((3 - 128).toByte(), i8.get(9))
        assertEquals(0.toByte(), i8.get(10))
        assertEquals(127.toByte(), i8.get(11))

        val f32 = Preprocess.toTensor(pixels, TestData.meta(inputDtype = "float32").input)
        assertEquals(ByteOrder.nativeOrder(), f32.order())
        assertEquals(16 * 3 * 4, f32.remaining())
        assertEquals(3f, f32.getFloat(9 * 4), 0f)
        assertEquals(255f, f32.getFloat(11 * 4), 0f)
    }

    @Test
    fun normalisesWithRangeMeanStd() {
        val json = TestData.modelJson(inputDtype = "float32").replace("\"range\": [0, 255]", "\"range\": [-1, 1]")
            .replace("\"mean\": [0, 0, 0]", "\"mean\": [0.5, 0, 0]").replace("\"std\": [1, 1, 1]", "\"std\": [2, 1, 1]")
        val spec = ModelMetadata.parse(json).input
        assertEquals((1.0 - 0.5) / 2.0, Preprocess.normalise(255, 0, spec), 1e-12)
        assertEquals(-1.0, Preprocess.normalise(0, 1, spec), 1e-12)
    }

    @Test
    fun quantisesHalfToEvenAndClamps() {
        val spec = TestData.meta(inputScale = 2.0, inputZeroPoint = 10).input
        assertEquals(10, Preprocess.quantise(1.0, spec)) // 0.5 -> 0 (half to even) + 10
        assertEquals(12, Preprocess.quantise(3.0, spec)) // 1.5 -> 2 + 10
        assertEquals(255, Preprocess.quantise(1000.0, spec))
        assertEquals(0, Preprocess.quantise(-1000.0, spec))
    }

    @Test
    fun dequantisesOutputs() {
        val meta = TestData.meta()
        val raw = java.nio.ByteBuffer.wrap(byteArrayOf(0, 64, 128.toByte(), 64))
        val p = Postprocess.probabilities(raw, meta.output, 4)
        assertArrayEquals(doubleArrayOf(0.0, 0.25, 0.5, 0.25), p, 1e-9)
        val logits = OutputSpec(TensorType.INT8, 1.0, -128, isSoftmax = false)
        val q = Postprocess.probabilities(java.nio.ByteBuffer.wrap(byteArrayOf(-128, -128)), logits, 2)
        assertArrayEquals(doubleArrayOf(0.5, 0.5), q, 1e-12)
    }

    @Test
    fun prepareChainsResizeAndEncode() {
        val src = IntArray(8 * 8) { Preprocess.argb(it % 256, 0, 0) }
        val buf = Preprocess.prepare(src, 8, 8, TestData.meta().input)
        // 8x8 -> 4x4 nearest: x source = floor((x + .5) * 2) = 1, 3, 5, 7; first pixel (1, 1) = 9.
        assertEquals(9.toByte(), buf.get(0))
        assertEquals(48, buf.remaining())
    }
}
