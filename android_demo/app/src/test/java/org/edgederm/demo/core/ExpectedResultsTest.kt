package org.edgederm.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class ExpectedResultsTest {
    private val json = """
        {"format_version": 1, "model_sha256": "abc", "labels": ["A", "B", "C"],
         "tolerance": {"prob_atol": 0.02},
         "samples": [
           {"file": "samples/0.png", "label": "A", "top1": "A", "probs": [0.7, 0.2, 0.1]},
           {"file": "samples/1.png", "label": null, "top1": "B", "probs": [0.495, 0.505, 0.0]}]}
    """.trimIndent()

    @Test
    fun parsesAndCompares() {
        val e = ExpectedResults.parse(json)
        assertEquals("abc", e.modelSha256)
        assertEquals(2, e.samples.size)
        assertEquals("A", e.samples[0].label)
        assertNull(e.samples[1].label)
        assertNull(e.compare(e.samples[0], doubleArrayOf(0.71, 0.19, 0.1)))
        assertTrue(e.compare(e.samples[0], doubleArrayOf(0.6, 0.3, 0.1))!!.contains("differ by 0.1000"))
        assertTrue(e.compare(e.samples[0], doubleArrayOf(0.7, 0.3))!!.contains("2 scores"))
        // A near tie on the host may flip within tolerance.
        assertNull(e.compare(e.samples[1], doubleArrayOf(0.505, 0.495, 0.0)))
    }

    @Test
    fun perClassAccuracyCountsLabelledSamples() {
        val e = ExpectedResults.parse(json)
        val acc = e.perClassAccuracy(listOf("B", "B"))
        assertEquals(setOf("A"), acc.keys)
        assertEquals(0, acc.getValue("A")[0])
        assertEquals(1, acc.getValue("A")[1])
    }

    @Test
    fun refusesProbabilityCountMismatch() {
        try {
            ExpectedResults.parse(json.replace("[0.7, 0.2, 0.1]", "[0.7, 0.3]"))
            fail("accepted 2 probabilities for 3 labels")
        } catch (e: JsonException) {
            assertTrue(e.message!!.contains("2 probabilities for 3 labels"))
        }
    }
}
