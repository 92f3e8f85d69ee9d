package org.edgederm.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class ModelMetadataTest {
    @Test
    fun parsesTheConvertMetadata() {
        val m = TestData.meta()
        assertEquals(listOf("MM", "NV", "BCC", "AK"), m.labels)
        assertEquals(4, m.input.height)
        assertEquals(4, m.input.width)
        assertEquals(ResizeMode.NEAREST, m.input.resize)
        assertEquals(TensorType.UINT8, m.input.dtype)
        assertEquals(TensorType.UINT8, m.output.dtype)
        assertEquals(0.00390625, m.output.scale, 0.0)
        assertTrue(m.output.isSoftmax)
        assertEquals(4 * 4 * 3, m.input.byteSize)
        assertEquals("Malignant melanoma", m.description("MM"))
        assertEquals("BCC", m.description("BCC"))
        assertEquals(0.98, m.top1Agreement!!, 0.0)
        assertEquals(true, m.verificationPassed)
    }

    @Test
    fun mapsTriageGroups() {
        val m = TestData.meta()
        assertEquals(TriageGroup.MALIGNANT, m.triageOf("MM"))
        assertEquals(TriageGroup.BENIGN, m.triageOf("NV"))
        assertEquals(TriageGroup.PREMALIGNANT, m.triageOf("AK"))
        assertEquals(TriageGroup.UNKNOWN, m.triageOf("not-a-label"))
        assertEquals(TriageGroup.UNCERTAIN, TriageGroup.of("uncertain"))
        assertEquals(TriageGroup.UNKNOWN, TriageGroup.of("weird"))
    }

    @Test
    fun floatModelNeedsNoPositiveScale() {
        val m = ModelMetadata.parse(TestData.modelJson(inputDtype = "float32", inputScale = 0.0, outputDtype = "float32"))
        assertEquals(TensorType.FLOAT32, m.input.dtype)
        assertEquals(4 * 4 * 3 * 4, m.input.byteSize)
    }

    private fun expectError(json: String, fragment: String) {
        try {
            ModelMetadata.parse(json)
            fail("accepted a model.json that should fail with '$fragment'")
        } catch (e: JsonException) {
            assertTrue("'${e.message}' lacks '$fragment'", e.message!!.contains(fragment))
        }
    }

    @Test
    fun refusesWhatTheAppCannotFeed() {
        val ok = TestData.modelJson()
        expectError(ok.replace(", \"zero_point\": 0 }", " }"), "'input.zero_point' is missing")
        expectError(ok.replace("\"dtype\": \"uint8\", \"scale\": 1.0", "\"dtype\": \"int16\", \"scale\": 1.0"), "int16")
        expectError(TestData.modelJson(resize = "crop"), "'input.resize' is 'crop'")
        expectError(TestData.modelJson(inputScale = 0.0), "positive scale")
        expectError(ok.replace("\"format_version\": 1", "\"format_version\": 2"), "newer")
        expectError(ok.replace("\"size\": [4, 4]", "\"size\": [4]"), "input.size")
        expectError(ok.replace("\"channels\": 3", "\"channels\": 1"), "3-channel RGB")
        expectError(ok.replace("\"std\": [1, 1, 1]", "\"std\": [1, 0, 1]"), "std non-zero")
        expectError(ok.replace("\"labels\": [\"MM\", \"NV\", \"BCC\", \"AK\"]", "\"labels\": []"), "'labels' is empty")
        expectError("[1, 2]", "expected a JSON object")
        expectError("{\"format_version\": 1,", "invalid JSON")
    }
}
