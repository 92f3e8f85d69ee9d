package org.edgederm.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.fail
import org.junit.Test

class TriageTest {
    @Test
    fun topThreeLargestFirstWithTiesInLabelOrder() {
        assertEquals(listOf(2, 0, 3), Triage.topIndices(doubleArrayOf(0.3, 0.1, 0.4, 0.3), 3))
        assertEquals(listOf(0), Triage.topIndices(doubleArrayOf(0.5), 3))
    }

    @Test
    fun classifyReportsDescriptionsAndGroups() {
        val m = TestData.meta()
        val c = Triage.classify(doubleArrayOf(0.1, 0.6, 0.25, 0.05), m)
        assertEquals(listOf("NV", "BCC", "MM"), c.top.map { it.label })
        assertEquals("Melanocytic nevus", c.top[0].description)
        assertEquals(TriageGroup.BENIGN, c.top[0].triage)
        assertEquals(TriageGroup.MALIGNANT, c.top[1].triage)
        assertEquals("Melanocytic nevus (NV) 60.0 %", c.top[0].format())
        // Sums: benign 0.6, malignant 0.35, premalignant 0.05.
        assertEquals(TriageGroup.BENIGN, c.triage)
        assertEquals(listOf(TriageGroup.BENIGN, TriageGroup.MALIGNANT, TriageGroup.PREMALIGNANT), c.groups.map { it.first })
        assertEquals(0.35, c.groups[1].second, 1e-12)
    }

    @Test
    fun malignantSumCanOutweighTheTopClass() {
        val c = Triage.classify(doubleArrayOf(0.3, 0.4, 0.3, 0.0), TestData.meta())
        assertEquals("NV", c.top[0].label)
        assertEquals(TriageGroup.MALIGNANT, c.triage)
    }

    @Test
    fun refusesAScoreCountMismatch() {
        try {
            Triage.classify(doubleArrayOf(1.0), TestData.meta())
            fail("accepted 1 score for 4 labels")
        } catch (e: IllegalArgumentException) {
            assertEquals("the model gives 1 scores but model.json has 4 labels", e.message)
        }
    }

    @Test
    fun calibrationAndOperatingPointAreApplied() {
        val json = TestData.modelJson().trimEnd().removeSuffix("}") +
            ""","output_calibration": {"temperature": 2.0, "log_prior": null, "threshold": 0.3,
                "referral_classes": ["MM", "BCC"], "target_sensitivity": 0.9}}"""
        val m = ModelMetadata.parse(json)
        val c = Triage.classify(doubleArrayOf(0.04, 0.81, 0.09, 0.06), m, 4)
        // softmax(log p / 2) = sqrt(p) / sum(sqrt(p)): 0.2, 0.9, 0.3, sqrt(0.06) over their sum.
        val s = 0.2 + 0.9 + 0.3 + Math.sqrt(0.06)
        assertEquals(0.9 / s, c.top[0].probability, 1e-9)
        val r = c.referral ?: throw AssertionError("no referral decision")
        assertEquals(0.5 / s, r.score, 1e-9)
        assertEquals(true, r.refer)  // 0.304 >= 0.3
        val strict = ModelMetadata.parse(json.replace("\"threshold\": 0.3", "\"threshold\": 0.31"))
        assertEquals(false, Triage.classify(doubleArrayOf(0.04, 0.81, 0.09, 0.06), strict, 4).referral?.refer)
    }
}
