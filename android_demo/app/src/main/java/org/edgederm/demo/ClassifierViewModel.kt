package org.edgederm.demo

import android.app.Application
import android.content.Context
import android.graphics.Bitmap
import android.net.Uri
import android.os.Handler
import android.os.Looper
import android.util.Log
import androidx.camera.core.ImageProxy
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.LiveData
import androidx.lifecycle.MutableLiveData
import java.io.FileNotFoundException
import java.util.Locale
import org.edgederm.demo.core.Acquisition
import org.edgederm.demo.core.AcquisitionReport
import org.edgederm.demo.core.Classification
import org.edgederm.demo.core.Framing
import org.edgederm.demo.core.InferenceSettings
import org.edgederm.demo.core.ModelInfo
import org.edgederm.demo.core.Region
import org.edgederm.demo.core.Worker

/** Everything the screen shows; kept by the ViewModel, so a rotation redraws it without work. */
data class Screen(
    val settings: InferenceSettings,
    /** The model line (variant, size, where it runs) or why there is no usable model. */
    val model: String = "",
    val photo: Bitmap? = null,
    /** Null: the framing hint. */
    val status: String? = null,
    val results: String = "",
    val canClassifyAnyway: Boolean = false,
    val busy: Boolean = false
)

/**
 * Holds the model (loaded once, kept across rotations and other configuration changes) and the
 * single worker thread that loads it and classifies. The interpreter is only touched on the worker
 * ([Classifier] requires one thread for the GPU delegate). The worker is closed in [onCleared],
 * after which work handed in (a late camera frame) is released instead of run.
 */
class ClassifierViewModel(app: Application) : AndroidViewModel(app) {
    private val worker = Worker("edge-derm classifier")
    private val main = Handler(Looper.getMainLooper())
    private val prefs = app.getSharedPreferences(PREFS, Context.MODE_PRIVATE)
    val cores: Int = Runtime.getRuntime().availableProcessors()

    private val state = MutableLiveData(Screen(InferenceSettings.decode(prefs.getString(KEY_SETTINGS, null), cores)))
    val screen: LiveData<Screen> get() = state

    /** Worker thread only. */
    private var classifier: Classifier? = null
    private var modelError: String? = null

    /** The photo waiting for "Classify anyway" after a failed acquisition check (worker thread only). */
    private var pending: Pixels? = null

    init {
        val settings = state.value!!.settings
        worker.post(Runnable { load(settings) })
    }

    /** Apply a change on the main thread, in order. */
    private fun update(change: (Screen) -> Screen) {
        main.post { state.value = change(state.value!!) }
    }

    private fun text(id: Int, vararg args: Any): String = getApplication<Application>().getString(id, *args)

    // -- settings ------------------------------------------------------------------------------

    /** Main thread: reload the model for new [settings] (no-op when unchanged). */
    fun applySettings(settings: InferenceSettings) {
        if (settings == state.value!!.settings) return
        prefs.edit().putString(KEY_SETTINGS, settings.encode()).apply()
        state.value = state.value!!.copy(settings = settings, model = text(R.string.loading_model))
        worker.post(Runnable { load(settings) })
    }

    private fun load(settings: InferenceSettings) {
        classifier?.close()
        classifier = null
        modelError = null
        val line = try {
            val clf = Classifier.load(getApplication(), settings)
            classifier = clf
            ModelInfo.describe(clf.meta, clf.sizeBytes) + "\n" + text(R.string.running_on, clf.plan.describe())
        } catch (e: FileNotFoundException) {
            text(R.string.no_model).also { modelError = it }
        } catch (e: Exception) {
            Log.w(TAG, "model not usable", e)
            text(R.string.model_unusable, e.message ?: e.toString()).also { modelError = it }
        } catch (e: LinkageError) {  // e.g. UnsatisfiedLinkError: the native runtime is missing for this ABI
            Log.w(TAG, "runtime not loadable", e)
            text(R.string.model_unusable, e.message ?: e.toString()).also { modelError = it }
        }
        update { it.copy(model = line) }
    }

    // -- input ---------------------------------------------------------------------------------

    fun captureStarted() {
        state.value = state.value!!.copy(busy = true)
    }

    fun captureFailed(message: String?) {
        state.value = state.value!!.copy(busy = false, status = text(R.string.capture_failed, message ?: ""))
    }

    /**
     * A camera frame, handed over on the main thread by the capture callback. Cropped to the guide
     * the user saw in a [viewW] x [viewH] preview. The frame is closed in every case, also when the
     * ViewModel is already cleared.
     */
    fun onCapture(image: ImageProxy, viewW: Int, viewH: Int) {
        worker.post(Runnable {
            val shown: Bitmap = try {
                val rotation = image.imageInfo.rotationDegrees
                val r = Framing.guideInFrame(image.width, image.height, rotation, viewW, viewH)
                ImageIO.cropUpright(image.toBitmap(), rotation, r)
            } catch (e: Exception) {
                update { it.copy(busy = false, status = text(R.string.capture_failed, e.message ?: "")) }
                return@Runnable
            } finally {
                image.close()
            }
            guarded(R.string.capture_failed) {
                val px = ImageIO.fromBitmap(shown)
                checkPhoto(px, Region(0, 0, px.width), shown)
            }
        }, Runnable { image.close() })
    }

    /** A gallery image: decoded within the pixel budget, classified whole as `edge-derm predict` does. */
    fun onGalleryImage(uri: Uri) {
        update { it.copy(busy = true) }
        worker.post(Runnable {
            val resolver = getApplication<Application>().contentResolver
            val bitmap = try {
                ImageIO.decodeBitmap { resolver.openInputStream(uri) ?: throw FileNotFoundException(uri.toString()) }
            } catch (e: Exception) {
                update { it.copy(busy = false, status = text(R.string.unreadable_image, e.message ?: "")) }
                return@Runnable
            } catch (e: OutOfMemoryError) {
                update { it.copy(busy = false, status = text(R.string.unreadable_image, "too large")) }
                return@Runnable
            }
            guarded(R.string.unreadable_image) {
                val px = ImageIO.fromBitmap(bitmap)
                checkPhoto(px, Framing.guide(px.width, px.height), bitmap)
            }
        })
    }

    /** Worker: run [work]; a failure (or running out of memory) becomes a status line, never a crash. */
    private fun guarded(message: Int, work: () -> Unit) {
        try {
            work()
        } catch (e: Exception) {
            Log.w(TAG, "photo not processed", e)
            update { it.copy(busy = false, status = text(message, e.message ?: e.toString())) }
        } catch (e: OutOfMemoryError) {
            update { it.copy(busy = false, status = text(message, "too large")) }
        }
    }

    /** Worker: acquisition checks on [region] of [px], then classify or offer "Classify anyway". */
    private fun checkPhoto(px: Pixels, region: Region, shown: Bitmap) {
        update { it.copy(photo = shown, results = "", canClassifyAnyway = false) }
        val report = Acquisition.check(Framing.crop(px.argb, px.width, region), region.size, region.size)
        if (report.ok) {
            classify(px)
        } else {
            pending = px
            val issues = text(R.string.acquisition_issues, report.issues.joinToString(" ") { it.message })
            update { it.copy(busy = false, status = issues + "\n" + figures(report), canClassifyAnyway = true) }
        }
    }

    /** Main thread: classify the photo that failed its checks anyway. */
    fun classifyAnyway() {
        state.value = state.value!!.copy(canClassifyAnyway = false, busy = true)
        worker.post(Runnable { pending?.let { classify(it) } ?: update { it.copy(busy = false) } })
    }

    /** Main thread: back to the camera; the photo and its result are dropped. */
    fun clearPhoto() {
        state.value = state.value!!.copy(photo = null, status = null, results = "", canClassifyAnyway = false, busy = false)
        worker.post(Runnable { pending = null })
    }

    private fun classify(px: Pixels) {
        pending = null
        val clf = classifier
        if (clf == null) {
            update { it.copy(busy = false, status = modelError ?: text(R.string.no_model)) }
            return
        }
        update { it.copy(status = text(R.string.classifying)) }
        val result = try {
            clf.classify(px.argb, px.width, px.height)
        } catch (e: Exception) {
            update { it.copy(busy = false, status = text(R.string.classification_failed, e.message ?: "")) }
            return
        }
        val timing = result.timing.format()
        val where = clf.plan.describe()
        update { it.copy(busy = false, status = text(R.string.classified, where, timing), results = render(result.classification)) }
    }

    private fun figures(r: AcquisitionReport): String =
        String.format(Locale.ROOT, "(sharpness %.0f, brightness %.0f/255, glare %.1f %%)", r.sharpness, r.meanLuma, r.brightFraction * 100)

    private fun render(c: Classification): String {
        val sb = StringBuilder()
        sb.append("Most similar classes:\n")
        for ((i, p) in c.top.withIndex()) sb.append("${i + 1}. ${p.format()} - ${p.triage.title}\n")
        sb.append("\nTriage group: ${c.triage.title}. ${c.triage.advice}\n")
        sb.append(c.groups.joinToString(", ", "(") { String.format(Locale.ROOT, "%s %.0f %%", it.first.id, it.second * 100) })
        sb.append(")\n")
        val r = c.referral
        if (r != null) {
            // The operating point chosen on the validation split (model.json output_calibration.threshold).
            sb.append(String.format(Locale.ROOT, "\n%s: P(%s) %.0f %% %s threshold %.0f %%\n",
                if (r.refer) "Refer" else "Routine", r.classes.joinToString(" + "), r.score * 100,
                if (r.refer) ">=" else "<", r.threshold * 100))
        }
        sb.append("\n").append(text(R.string.not_a_diagnosis))
        return sb.toString()
    }

    override fun onCleared() {
        main.removeCallbacksAndMessages(null)
        worker.close(Runnable {
            classifier?.close()
            classifier = null
        })
    }

    companion object {
        private const val TAG = "EdgeDerm"
        private const val PREFS = "edge-derm"
        private const val KEY_SETTINGS = "inference"
    }
}
