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
}
