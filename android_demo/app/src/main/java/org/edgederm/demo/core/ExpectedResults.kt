package org.edgederm.demo.core

/** One bundled sample: its asset path, true label (if known) and the host's probabilities. */
class ExpectedSample(val file: String, val label: String?, val top1: String, val probs: DoubleArray)

/**
 * expected_results.json, written by `edge-derm export android` from `edge-derm predict`-style
 * host predictions (edge_derm.runtime.TFLiteModel) on the same .tflite and the same PNG samples.
 */
class ExpectedResults(
    val modelSha256: String,
    val labels: List<String>,
    /** Largest allowed |phone - host| per probability. */
    val probAtol: Double,
    val samples: List<ExpectedSample>
) {
    /** A one-line mismatch description, or null when [actual] agrees with [expected]. */
    fun compare(expected: ExpectedSample, actual: DoubleArray): String? {
        if (actual.size != expected.probs.size) {
            return "${expected.file}: ${actual.size} scores, expected ${expected.probs.size}"
        }
        var worst = 0.0
        for (i in actual.indices) worst = Math.max(worst, Math.abs(actual[i] - expected.probs[i]))
        if (worst > probAtol) {
            return String.format(java.util.Locale.ROOT, "%s: probabilities differ by %.4f (> %.4f)", expected.file, worst, probAtol)
        }
        val top = labels[Triage.topIndices(actual, 1)[0]]
        if (top != expected.top1) {
            // Within tolerance but a different winner: only acceptable for a near tie on the host.
            val sorted = expected.probs.sortedArrayDescending()
            val margin = if (sorted.size > 1) sorted[0] - sorted[1] else 1.0
            if (margin > 2 * probAtol) return "${expected.file}: top-1 $top, expected ${expected.top1}"
        }
        return null
    }

    /** Per true label: (correct, total) for [predicted] top-1 labels given in sample order. */
    fun perClassAccuracy(predicted: List<String>): Map<String, IntArray> {
        val out = LinkedHashMap<String, IntArray>()
        for ((i, s) in samples.withIndex()) {
            val label = s.label ?: continue
            val cell = out.getOrPut(label) { IntArray(2) }
            if (predicted[i] == label) cell[0]++
            cell[1]++
        }
        return out
    }

    companion object {
        const val FORMAT_VERSION = 1

        fun parse(text: String): ExpectedResults {
            val f = JsonFields.parse(text, "expected_results.json")
            val version = f.reqInt("format_version")
            if (version > FORMAT_VERSION) {
                throw JsonException("expected_results.json: format_version $version is newer than this test reads ($FORMAT_VERSION)")
            }
            val labels = f.reqStringList("labels")
            val samples = f.reqObjectList("samples").map { s ->
                val probs = s.reqDoubleList("probs").toDoubleArray()
                if (probs.size != labels.size) {
                    throw JsonException("expected_results.json: ${s.reqString("file")} has ${probs.size} probabilities for ${labels.size} labels")
                }
                ExpectedSample(
                    file = s.reqString("file"),
                    label = if (s.has("label")) s.reqString("label") else null,
                    top1 = s.reqString("top1"),
                    probs = probs
                )
            }
            return ExpectedResults(f.reqString("model_sha256"), labels, f.reqDouble("tolerance.prob_atol"), samples)
        }
    }
}
