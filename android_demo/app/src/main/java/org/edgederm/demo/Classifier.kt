package org.edgederm.demo

import android.content.Context
import java.io.Closeable
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import org.edgederm.demo.core.Classification
import org.edgederm.demo.core.ModelMetadata
import org.edgederm.demo.core.Postprocess
import org.edgederm.demo.core.Preprocess
import org.edgederm.demo.core.TensorType
import org.edgederm.demo.core.Triage
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter

/**
 * The bundled model (assets/model.tflite + assets/model.json, written by `edge-derm export android`)
 * on LiteRT's CPU interpreter. Checks on load that model.json describes the tensors in the file.
 */
class Classifier(context: Context, threads: Int = 4) : Closeable {
    val meta: ModelMetadata = ModelMetadata.parse(
        context.assets.open(METADATA_ASSET).bufferedReader(Charsets.UTF_8).use { it.readText() }
    )
    private val interpreter: Interpreter

    init {
        val model = context.assets.openFd(MODEL_ASSET).use { fd ->
            FileInputStream(fd.fileDescriptor).channel.use { ch ->
                ch.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        }
        interpreter = Interpreter(model, Interpreter.Options().setNumThreads(threads))
        checkTensors()
    }

    private fun checkTensors() {
        val input = interpreter.getInputTensor(0)
        val output = interpreter.getOutputTensor(0)
        val shape = input.shape()
        val want = meta.input
        if (shape.size != 4 || shape[1] != want.height || shape[2] != want.width || shape[3] != 3) {
            fail("model input is ${shape.contentToString()}, model.json says ${want.height}x${want.width}x3")
        }
        if (input.dataType() != dataType(want.dtype) || output.dataType() != dataType(meta.output.dtype)) {
            fail("model tensors are ${input.dataType()} -> ${output.dataType()}, model.json says ${want.dtype.id} -> ${meta.output.dtype.id}")
        }
        if (output.shape().last() != meta.labels.size) {
            fail("model gives ${output.shape().last()} scores, model.json has ${meta.labels.size} labels")
        }
    }

    private fun fail(what: String): Nothing =
        throw IllegalStateException("$what; export the model again with `edge-derm export android`")

    private fun dataType(t: TensorType): DataType = when (t) {
        TensorType.FLOAT32 -> DataType.FLOAT32
        TensorType.UINT8 -> DataType.UINT8
        TensorType.INT8 -> DataType.INT8
    }

    /** Probabilities in label order for an ARGB image of [w] x [h] (the whole image is the model's view). */
    fun probabilities(pixels: IntArray, w: Int, h: Int): DoubleArray {
        val input = Preprocess.prepare(pixels, w, h, meta.input)
        val out = ByteBuffer.allocateDirect(meta.labels.size * meta.output.dtype.bytes).order(ByteOrder.nativeOrder())
        synchronized(interpreter) { interpreter.run(input, out) }
        return Postprocess.probabilities(out, meta.output, meta.labels.size)
    }

    fun classify(pixels: IntArray, w: Int, h: Int, k: Int = 3): Classification =
        Triage.classify(probabilities(pixels, w, h), meta, k)

    override fun close() = interpreter.close()

    companion object {
        /** Asset names; edge_derm/export.py writes them (tests/test_android_contract.py checks both sides). */
        const val MODEL_ASSET = "model.tflite"
        const val METADATA_ASSET = "model.json"
        const val LABELS_ASSET = "labels.txt"
    }
}
