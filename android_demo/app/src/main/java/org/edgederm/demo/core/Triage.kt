package org.edgederm.demo.core

import java.util.Locale

/** Triage groups of the taxonomy (the taxonomy TOML files of edge_derm), most urgent first. */
enum class TriageGroup(val id: String, val title: String, val advice: String) {
    MALIGNANT("malignant", "Malignant", "Looks like a skin cancer class: see a doctor soon."),
    PREMALIGNANT("premalignant", "Premalignant", "Looks like a precancerous class: have it checked by a doctor."),
    UNCERTAIN("uncertain", "Uncertain", "Cannot be placed as benign or malignant: have it checked by a doctor."),
    BENIGN("benign", "Benign", "Looks like a benign class; see a doctor if it changes, bleeds or itches."),
    UNKNOWN("unknown", "Unknown", "This model's classes carry no triage group.");

    companion object {
        /** The group named [id]; an unrecognised name maps to UNKNOWN rather than failing. */
        fun of(id: String): TriageGroup = values().firstOrNull { it.id == id } ?: UNKNOWN
    }
}

/** One class of a result, with its probability and triage group. */
class Prediction(val label: String, val description: String, val probability: Double, val triage: TriageGroup) {
    /** "Melanoma (MM) 87.3 %". */
    fun format(): String {
        val name = if (description == label) label else "$description ($label)"
        return String.format(Locale.ROOT, "%s %.1f %%", name, probability * 100.0)
    }
}

/** The stored operating point applied to one image: refer when [score] >= [threshold]. */
class Referral(val score: Double, val threshold: Double, val classes: List<String>) {
    val refer: Boolean get() = score >= threshold
}

/**
 * A classified image: the top-k classes and the probability summed per triage group (of the calibrated
 * probabilities when model.json has output_calibration), and the referral decision when it has a threshold.
 */
class Classification(
    val top: List<Prediction>,
    val groups: List<Pair<TriageGroup, Double>>,
    val referral: Referral? = null
) {
    /** The triage group with the largest summed probability. */
    val triage: TriageGroup get() = groups.first().first
}

object Triage {
    /** Top-[k] classes of [probs] (in label order) with descriptions and triage groups. */
    fun classify(raw: DoubleArray, meta: ModelMetadata, k: Int = 3): Classification {
        if (raw.size != meta.labels.size) {
            throw IllegalArgumentException("the model gives ${raw.size} scores but model.json has ${meta.labels.size} labels")
        }
        val cal = meta.calibration
        val probs = cal?.apply(raw) ?: raw
        var referral: Referral? = null
        if (cal?.threshold != null && cal.referralClasses.isNotEmpty()) {
            referral = Referral(cal.referralScore(probs, meta.labels), cal.threshold, cal.referralClasses)
        }
        val order = topIndices(probs, k)
        val top = order.map { i ->
            val label = meta.labels[i]
            Prediction(label, meta.description(label), probs[i], meta.triageOf(label))
        }
        return Classification(top, groupTotals(probs, meta), referral)
    }

    /** Indices of the [k] largest values, largest first; ties keep label order. */
    fun topIndices(values: DoubleArray, k: Int): List<Int> =
        values.indices.sortedWith(Comparator { a, b ->
            val c = values[b].compareTo(values[a])
            if (c != 0) c else a.compareTo(b)
        }).take(k)

    /** Probability summed per triage group, largest first (groups with no class left out). */
    fun groupTotals(probs: DoubleArray, meta: ModelMetadata): List<Pair<TriageGroup, Double>> {
        val totals = LinkedHashMap<TriageGroup, Double>()
        for (g in TriageGroup.values()) totals[g] = 0.0
        val present = HashSet<TriageGroup>()
        for (i in probs.indices) {
            val g = meta.triageOf(meta.labels[i])
            present.add(g)
            totals[g] = (totals[g] ?: 0.0) + probs[i]
        }
        return totals.entries.filter { it.key in present }
            .sortedWith(Comparator { a, b ->
                val c = b.value.compareTo(a.value)
                if (c != 0) c else a.key.ordinal.compareTo(b.key.ordinal)
            })
            .map { Pair(it.key, it.value) }
    }
}
