package org.edgederm.demo.core

/** model.json documents for the tests, shaped like docs/ARCHITECTURE.md's metadata. */
object TestData {
    fun modelJson(
        inputDtype: String = "uint8",
        inputScale: Double = 1.0,
        inputZeroPoint: Int = 0,
        resize: String = "nearest",
        outputDtype: String = "uint8",
        extraInput: String = ""
    ): String = """
        {"format_version": 1, "name": "mobilenet_v2", "quantization": "int8",
         "labels": ["MM", "NV", "BCC", "AK"],
         "descriptions": {"MM": "Malignant melanoma", "NV": "Melanocytic nevus"},
         "triage": {"MM": "malignant", "NV": "benign", "BCC": "malignant", "AK": "premalignant"},
         "taxonomy": "dermai13",
         "input": {"size": [4, 4], "channels": 3, "color": "RGB", "resize": "$resize", "range": [0, 255],
                   "mean": [0, 0, 0], "std": [1, 1, 1], "preprocessing_in_model": "x/127.5 - 1",
                   "dtype": "$inputDtype", "scale": $inputScale, "zero_point": $inputZeroPoint $extraInput},
         "output": {"dtype": "$outputDtype", "scale": 0.00390625, "zero_point": 0, "activation": "softmax"},
         "verification": {"top1_agreement": 0.98, "max_abs_diff": 0.01, "mean_abs_diff": 0.001,
                          "integer_op_share": 1.0, "n": 64, "tolerance": {"top1": 0.9}, "passed": true},
         "provenance": {"run": "/runs/x", "dataset_hashes": ["ab"], "config_hash": "cd", "versions": {}}}
    """.trimIndent()

    fun meta(resize: String = "nearest", inputDtype: String = "uint8", inputScale: Double = 1.0, inputZeroPoint: Int = 0) =
        ModelMetadata.parse(modelJson(inputDtype, inputScale, inputZeroPoint, resize))
}
