package org.edgederm.demo

import android.content.Context
import java.io.Closeable
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import org.edgederm.demo.core.Accelerator
import org.edgederm.demo.core.Classification
import org.edgederm.demo.core.DelegatePlan
import org.edgederm.demo.core.DelegatePolicy
import org.edgederm.demo.core.InferenceSettings
import org.edgederm.demo.core.InferenceTiming
import org.edgederm.demo.core.ModelMetadata
import org.edgederm.demo.core.Postprocess
import org.edgederm.demo.core.Preprocess
import org.edgederm.demo.core.TensorType
import org.edgederm.demo.core.Threads
import org.edgederm.demo.core.Triage
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate

/** A classification and where its time went. */
class TimedClassification(val classification: Classification, val timing: InferenceTiming)

/**
 * The bundled model (assets/model.tflite + assets/model.json, written by `edge-derm export android`)
 * on LiteRT, on the CPU (XNNPACK, [DelegatePlan.threads] threads) or the GPU delegate where the
 * device's compatibility list allows it ([DelegatePolicy]; CPU when it does not or the delegate
 * fails). Checks on load that model.json describes the tensors in the file.
 *
 * Create, use and close it on one thread (the GPU delegate requires it): the ViewModel's worker.
 */
class Classifier private constructor(
    val meta: ModelMetadata,
    /** The model file's size in the APK, in bytes. */
    val sizeBytes: Long,
    val plan: DelegatePlan,
    private val interpreter: Interpreter,
    private val gpu: GpuDelegate?
) : Closeable {

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

    /** Probabilities in label order for an ARGB image of [w] x [h] (the whole image is the model's view). */
    fun probabilities(pixels: IntArray, w: Int, h: Int): DoubleArray = infer(pixels, w, h, null)

    private fun infer(pixels: IntArray, w: Int, h: Int, mark: (() -> Unit)?): DoubleArray {
        val input = Preprocess.prepare(pixels, w, h, meta.input)
        mark?.invoke()
        val out = ByteBuffer.allocateDirect(meta.labels.size * meta.output.dtype.bytes).order(ByteOrder.nativeOrder())
        interpreter.run(input, out)
        mark?.invoke()
        return Postprocess.probabilities(out, meta.output, meta.labels.size)
    }

    /** Top [k] with triage, timed per stage (preprocessing, inference, postprocessing). */
    fun classify(pixels: IntArray, w: Int, h: Int, k: Int = 3): TimedClassification {
        var result: Classification? = null
        val timing = InferenceTiming.measure({ System.nanoTime() }) { mark ->
            val probs = infer(pixels, w, h, mark)
            result = Triage.classify(probs, meta, k)
            mark()
        }
        return TimedClassification(result!!, timing)
    }

    override fun close() {
        interpreter.close()
        gpu?.close()
    }

    companion object {
        /** Asset names; edge_derm/export.py writes them (tests/test_android_contract.py checks both sides). */
        const val MODEL_ASSET = "model.tflite"
        const val METADATA_ASSET = "model.json"
        const val LABELS_ASSET = "labels.txt"

        /**
         * Loads the bundled model as [settings] ask, as far as the device allows: GPU only when the
         * compatibility list supports this device, and on the CPU when the GPU delegate fails.
         * FileNotFoundException when the app has no model (export one).
         */
        fun load(context: Context, settings: InferenceSettings): Classifier {
            val meta = ModelMetadata.parse(
                context.assets.open(METADATA_ASSET).bufferedReader(Charsets.UTF_8).use { it.readText() }
            )
            val (model, size) = mapModel(context)
            val cores = Runtime.getRuntime().availableProcessors()
            val wantsGpu = settings.accelerator == Accelerator.GPU
            var plan = DelegatePolicy.plan(settings, wantsGpu && gpuSupported(), cores)
            if (plan.accelerator == Accelerator.GPU) {
                try {
                    return build(meta, model, size, plan)
                } catch (e: Exception) {
                    plan = DelegatePolicy.afterGpuFailure(plan, e.message)
                } catch (e: LinkageError) { // the delegate's native library is missing on this ABI
                    plan = DelegatePolicy.afterGpuFailure(plan, e.message)
                }
            }
            return build(meta, model, size, plan)
        }

        /** The CPU default (the instrumented test compares with the host's CPU results). */
        fun load(context: Context): Classifier =
            load(context, InferenceSettings(Accelerator.CPU, Threads.default(Runtime.getRuntime().availableProcessors())))

        private fun gpuSupported(): Boolean = try {
            val list = CompatibilityList()
            try { list.isDelegateSupportedOnThisDevice } finally { list.close() }
        } catch (e: Exception) {
            false
        } catch (e: LinkageError) {
            false
        }

        private fun build(meta: ModelMetadata, model: MappedByteBuffer, size: Long, plan: DelegatePlan): Classifier {
            val options = Interpreter.Options().setNumThreads(plan.threads)
            var gpu: GpuDelegate? = null
            if (plan.accelerator == Accelerator.GPU) {
                val list = CompatibilityList()
                gpu = try { GpuDelegate(list.bestOptionsForThisDevice) } finally { list.close() }
                options.addDelegate(gpu)
            }
            val interpreter = try {
                Interpreter(model, options)
            } catch (e: Exception) {
                gpu?.close()
                throw e
            }
            val clf = Classifier(meta, size, plan, interpreter, gpu)
            try {
                clf.checkTensors()
            } catch (e: Exception) {
                clf.close()
                throw e
            }
            return clf
        }

        private fun mapModel(context: Context): Pair<MappedByteBuffer, Long> =
            context.assets.openFd(MODEL_ASSET).use { fd ->
                FileInputStream(fd.fileDescriptor).channel.use { ch ->
                    Pair(ch.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength), fd.declaredLength)
                }
            }

        private fun fail(what: String): Nothing =
            throw IllegalStateException("$what; export the model again with `edge-derm export android`")

        private fun dataType(t: TensorType): DataType = when (t) {
            TensorType.FLOAT32 -> DataType.FLOAT32
            TensorType.UINT8 -> DataType.UINT8
            TensorType.INT8 -> DataType.INT8
        }
    }
}
