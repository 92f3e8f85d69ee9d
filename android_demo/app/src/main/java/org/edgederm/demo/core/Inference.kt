package org.edgederm.demo.core

import java.util.Locale

/** Where the interpreter runs the model. */
enum class Accelerator(val id: String, val title: String) {
    CPU("cpu", "CPU"),
    GPU("gpu", "GPU");

    companion object {
        fun of(id: String?): Accelerator? = values().firstOrNull { it.id == id }
    }
}

/** Interpreter thread counts the app offers: 1 to the number of cores, at most [MAX]. */
object Threads {
    /** More threads than this slow small models down (scheduling costs more than it saves). */
    const val MAX = 8
    const val PREFERRED = 4

    /** The largest choice on a phone with [cores] cores. */
    fun max(cores: Int): Int = Math.max(1, Math.min(MAX, cores))

    /** [requested] brought into 1..[max]. */
    fun clamp(requested: Int, cores: Int): Int = Math.max(1, Math.min(requested, max(cores)))

    /** The first choice: [PREFERRED] threads, or fewer on a phone with fewer cores. */
    fun default(cores: Int): Int = clamp(PREFERRED, cores)
}

/** What the user picked: accelerator and CPU threads (also used by the GPU delegate's CPU fallback ops). */
class InferenceSettings(val accelerator: Accelerator, val threads: Int) {
    /** A short string for SharedPreferences, e.g. "gpu:4". */
    fun encode(): String = "${accelerator.id}:$threads"

    override fun equals(other: Any?): Boolean =
        other is InferenceSettings && other.accelerator == accelerator && other.threads == threads

    override fun hashCode(): Int = accelerator.hashCode() * 31 + threads

    override fun toString(): String = encode()

    companion object {
        fun default(cores: Int): InferenceSettings = InferenceSettings(Accelerator.CPU, Threads.default(cores))

        /** Settings saved by [encode], clamped to this phone; the default for anything unreadable. */
        fun decode(text: String?, cores: Int): InferenceSettings {
            val parts = (text ?: "").split(":")
            val accelerator = Accelerator.of(parts.getOrNull(0)) ?: return default(cores)
            val threads = parts.getOrNull(1)?.toIntOrNull() ?: return default(cores)
            return InferenceSettings(accelerator, Threads.clamp(threads, cores))
        }
    }
}

/** The interpreter to build: the accelerator actually used, and why it differs from the request. */
class DelegatePlan(val accelerator: Accelerator, val threads: Int, val fallbackReason: String?) {
    val fellBack: Boolean get() = fallbackReason != null

    fun describe(): String {
        val base = if (accelerator == Accelerator.GPU) "GPU delegate" else "CPU, $threads thread${if (threads == 1) "" else "s"}"
        return if (fallbackReason == null) base else "$base (GPU not used: $fallbackReason)"
    }
}

/**
 * GPU only where the GPU delegate's compatibility list (CompatibilityList.isDelegateSupportedOnThisDevice)
 * says it works, and CPU whenever it does not or fails to build; the result always says which ran.
 */
object DelegatePolicy {
    fun plan(settings: InferenceSettings, gpuSupported: Boolean, cores: Int): DelegatePlan {
        val threads = Threads.clamp(settings.threads, cores)
        return when {
            settings.accelerator == Accelerator.CPU -> DelegatePlan(Accelerator.CPU, threads, null)
            gpuSupported -> DelegatePlan(Accelerator.GPU, threads, null)
            else -> DelegatePlan(Accelerator.CPU, threads, "this device is not on the GPU delegate's compatibility list")
        }
    }

    /** After building the GPU interpreter failed with [error]: the CPU plan to try instead. */
    fun afterGpuFailure(plan: DelegatePlan, error: String?): DelegatePlan {
        require(plan.accelerator == Accelerator.GPU) { "only a GPU plan falls back" }
        return DelegatePlan(Accelerator.CPU, plan.threads, "the GPU delegate failed (${error ?: "unknown error"})")
    }
}

/** Where the time of one classification went, measured with System.nanoTime. */
class InferenceTiming(val preprocessNanos: Long, val inferenceNanos: Long, val postprocessNanos: Long) {
    init {
        require(preprocessNanos >= 0 && inferenceNanos >= 0 && postprocessNanos >= 0) { "negative duration" }
    }

    val totalNanos: Long get() = preprocessNanos + inferenceNanos + postprocessNanos

    fun format(): String = String.format(
        Locale.ROOT, "preprocessing %s ms + inference %s ms + postprocessing %s ms = %s ms",
        ms(preprocessNanos), ms(inferenceNanos), ms(postprocessNanos), ms(totalNanos)
    )

    companion object {
        /** Milliseconds with one decimal below 10 ms, whole above. */
        fun ms(nanos: Long): String {
            val v = nanos / 1e6
            return if (v < 10) String.format(Locale.ROOT, "%.1f", v) else String.format(Locale.ROOT, "%.0f", v)
        }

        /** Times the three stages of [run]; [run] gets a clock to mark the end of each. */
        fun measure(clock: () -> Long, stages: (mark: () -> Unit) -> Unit): InferenceTiming {
            val marks = ArrayList<Long>(4)
            marks.add(clock())
            stages { marks.add(clock()) }
            require(marks.size == 4) { "expected 3 marks (preprocess, inference, postprocess), got ${marks.size - 1}" }
            return InferenceTiming(marks[1] - marks[0], marks[2] - marks[1], marks[3] - marks[2])
        }
    }
}

/** The model line of the screen: variant, file size, classes and input. */
object ModelInfo {
    /** Decimal units, as `edge-derm export` reports them: "950 B", "12.3 kB", "2.45 MB". */
    fun formatBytes(bytes: Long): String = when {
        bytes < 0 -> throw IllegalArgumentException("negative size $bytes")
        bytes < 1000 -> "$bytes B"
        bytes < 1_000_000 -> String.format(Locale.ROOT, "%.1f kB", bytes / 1e3)
        else -> String.format(Locale.ROOT, "%.2f MB", bytes / 1e6)
    }

    fun describe(meta: ModelMetadata, sizeBytes: Long): String {
        val agreement = meta.top1Agreement?.let {
            String.format(Locale.ROOT, "; %.1f %% top-1 agreement with the trained model", it * 100)
        } ?: ""
        return "Model: ${meta.name}, ${meta.quantization} variant, ${formatBytes(sizeBytes)}, " +
            "${meta.labels.size} classes, ${meta.input.width}x${meta.input.height} ${meta.input.resize.id}$agreement."
    }
}
