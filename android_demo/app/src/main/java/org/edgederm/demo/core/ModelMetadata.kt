package org.edgederm.demo.core

/** Element types of the model's input and output tensors, as model.json names them. */
enum class TensorType(val id: String, val bytes: Int, val min: Int, val max: Int) {
    FLOAT32("float32", 4, 0, 0),
    UINT8("uint8", 1, 0, 255),
    INT8("int8", 1, -128, 127);

    val quantized: Boolean get() = this != FLOAT32

    companion object {
        fun of(id: String, field: String): TensorType =
            values().firstOrNull { it.id == id }
                ?: throw JsonException("model.json: field '$field' is '$id'; this app supports float32, uint8, int8")
    }
}

/** How a photo becomes the model's square input (edge_derm.data.images.resize). */
enum class ResizeMode(val id: String) {
    /** Nearest-neighbour stretch to the input size (the paper's choice). */
    NEAREST("nearest"),
    /** Aspect-preserving bilinear resize, centred on black padding. */
    PAD("pad");

    companion object {
        fun of(id: String): ResizeMode = values().firstOrNull { it.id == id }
            ?: throw JsonException("model.json: field 'input.resize' is '$id'; this app supports nearest, pad")
    }
}

/** The input tensor contract: pixels (RGB, 0-255) -> range -> (x - mean) / std -> quantised. */
class InputSpec(
    val height: Int,
    val width: Int,
    val resize: ResizeMode,
    val rangeMin: Double,
    val rangeMax: Double,
    val mean: DoubleArray,
    val std: DoubleArray,
    val dtype: TensorType,
    val scale: Double,
    val zeroPoint: Int
) {
    /** Bytes of one input image in the tensor. */
    val byteSize: Int get() = height * width * 3 * dtype.bytes
}

/** The output tensor contract: dequantise with scale / zero point, softmax unless already applied. */
class OutputSpec(val dtype: TensorType, val scale: Double, val zeroPoint: Int, val isSoftmax: Boolean)

/**
 * Temperature scaling, prior shift and the triage operating point fitted on the run's validation split
 * (edge_derm/calibration.py; model.json "output_calibration"): p' = softmax(log p / T + logPrior), and
 * "refer" when the summed p' of [referralClasses] is at least [threshold].
 */
class OutputCalibration(
    val temperature: Double,
    val logPrior: DoubleArray?,
    val threshold: Double?,
    val referralClasses: List<String>,
    val targetSensitivity: Double?
) {
    /** Calibrated probabilities of raw softmax outputs [probs]. */
    fun apply(probs: DoubleArray): DoubleArray {
        val logits = DoubleArray(probs.size) { i ->
            Math.log(Math.max(probs[i], 1e-12)) / temperature + (logPrior?.get(i) ?: 0.0)
        }
        return Postprocess.softmax(logits)
    }

    /** The referral score (summed calibrated probability of [referralClasses]) of [calibrated]. */
    fun referralScore(calibrated: DoubleArray, labels: List<String>): Double {
        var score = 0.0
        for (i in labels.indices) if (labels[i] in referralClasses) score += calibrated[i]
        return score
    }
}

/**
 * The flat metadata that `edge-derm convert` embeds in each .tflite and `edge-derm export android`
 * copies to assets/model.json (docs/ARCHITECTURE.md, "Convert folder").
 */
class ModelMetadata(
    val name: String,
    val quantization: String,
    val taxonomy: String,
    val labels: List<String>,
    val descriptions: Map<String, String>,
    val triage: Map<String, TriageGroup>,
    val input: InputSpec,
    val output: OutputSpec,
    /** Top-1 agreement with the Keras model measured at conversion, when recorded. */
    val top1Agreement: Double?,
    val verificationPassed: Boolean?,
    /** Null for models converted from runs without a validation split. */
    val calibration: OutputCalibration? = null
) {
    fun description(label: String): String = descriptions[label] ?: label

    fun triageOf(label: String): TriageGroup = triage[label] ?: TriageGroup.UNKNOWN

    companion object {
        const val FORMAT_VERSION = 1

        /** Parse and check model.json; throws JsonException with a one-line message. */
        fun parse(text: String): ModelMetadata {
            val f = JsonFields.parse(text, "model.json")
            val version = f.reqInt("format_version")
            if (version > FORMAT_VERSION) {
                throw JsonException("model.json: format_version $version is newer than this app reads ($FORMAT_VERSION); update the app")
            }
            val labels = f.reqStringList("labels")
            if (labels.isEmpty()) throw JsonException("model.json: field 'labels' is empty")
            if (labels.toSet().size != labels.size) throw JsonException("model.json: field 'labels' has duplicates")

            val size = f.reqIntList("input.size")
            if (size.size != 2 || size[0] < 1 || size[1] < 1) {
                throw JsonException("model.json: field 'input.size' must be [height, width] of positive integers")
            }
            val channels = f.optInt("input.channels", 3)
            val color = f.optString("input.color", "RGB")
            if (channels != 3 || color != "RGB") {
                throw JsonException("model.json: the input is $channels-channel $color; this app feeds 3-channel RGB")
            }
            val range = f.optDoubleList("input.range") ?: listOf(0.0, 255.0)
            val mean = f.reqDoubleList("input.mean")
            val std = f.reqDoubleList("input.std")
            if (range.size != 2 || mean.size != 3 || std.size != 3 || std.any { it == 0.0 }) {
                throw JsonException("model.json: input.range needs 2 numbers, input.mean and input.std 3 each (std non-zero)")
            }
            val inType = TensorType.of(f.reqString("input.dtype"), "input.dtype")
            val inScale = f.reqDouble("input.scale")
            val outType = TensorType.of(f.reqString("output.dtype"), "output.dtype")
            val outScale = f.reqDouble("output.scale")
            if ((inType.quantized && !(inScale > 0.0)) || (outType.quantized && !(outScale > 0.0))) {
                throw JsonException("model.json: a quantised tensor needs a positive scale")
            }
            val input = InputSpec(
                height = size[0], width = size[1],
                resize = ResizeMode.of(f.reqString("input.resize")),
                rangeMin = range[0], rangeMax = range[1],
                mean = mean.toDoubleArray(), std = std.toDoubleArray(),
                dtype = inType, scale = inScale, zeroPoint = f.reqInt("input.zero_point")
            )
            val output = OutputSpec(
                dtype = outType, scale = outScale, zeroPoint = f.reqInt("output.zero_point"),
                isSoftmax = f.optString("output.activation", "softmax") == "softmax"
            )
            var calibration: OutputCalibration? = null
            if (f.has("output_calibration")) {
                // Optional as a block; when present, its temperature is required.
                val t = f.optDouble("output_calibration.temperature")
                    ?: throw JsonException("model.json: output_calibration has no temperature")
                if (!(t > 0.0) || t.isInfinite()) throw JsonException("model.json: output_calibration.temperature must be a positive number")
                val prior = f.optDoubleList("output_calibration.log_prior")
                if (prior != null && prior.size != labels.size) {
                    throw JsonException("model.json: output_calibration.log_prior needs one number per label")
                }
                val threshold = f.optDouble("output_calibration.threshold")
                if (threshold != null && !(threshold >= 0.0 && threshold <= 1.0)) {
                    throw JsonException("model.json: output_calibration.threshold must be in [0, 1]")
                }
                calibration = OutputCalibration(
                    temperature = t, logPrior = prior?.toDoubleArray(), threshold = threshold,
                    referralClasses = f.optStringList("output_calibration.referral_classes") ?: emptyList(),
                    targetSensitivity = f.optDouble("output_calibration.target_sensitivity")
                )
            }
            val triage = LinkedHashMap<String, TriageGroup>()
            for ((label, group) in f.reqStringMap("triage")) triage[label] = TriageGroup.of(group)
            return ModelMetadata(
                name = f.optString("name", "model"),
                quantization = f.optString("quantization", "unknown"),
                taxonomy = f.optString("taxonomy", "unknown"),
                labels = labels,
                descriptions = f.optStringMap("descriptions"),
                triage = triage,
                input = input,
                output = output,
                top1Agreement = f.optDouble("verification.top1_agreement"),
                verificationPassed = f.optBoolean("verification.passed"),
                calibration = calibration
            )
        }
    }
}
