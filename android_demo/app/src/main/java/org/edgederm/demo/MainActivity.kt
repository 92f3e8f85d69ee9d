package org.edgederm.demo

import android.Manifest
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.net.Uri
import android.os.Bundle
import android.util.Log
import android.view.View
import android.widget.Button
import android.widget.ImageView
import android.widget.TextView
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageCapture
import androidx.camera.core.ImageCaptureException
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import org.edgederm.demo.core.Acquisition
import org.edgederm.demo.core.AcquisitionReport
import org.edgederm.demo.core.Classification
import org.edgederm.demo.core.Framing
import org.edgederm.demo.core.Region

/**
 * Take a photo (CameraX, kept in memory only) or pick one from the gallery; check sharpness,
 * exposure and framing; classify on the phone; show the top 3 with triage groups.
 *
 * Camera photos are cropped to the framing guide (what the user aimed at); gallery photos are
 * classified whole, as `edge-derm predict` does. The acquisition checks look at the guide region.
 */
class MainActivity : AppCompatActivity() {
    private lateinit var preview: PreviewView
    private lateinit var photo: ImageView
    private lateinit var guide: View
    private lateinit var status: TextView
    private lateinit var results: TextView
    private lateinit var captureButton: Button
    private lateinit var useAnywayButton: Button

    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    private var imageCapture: ImageCapture? = null
    private var classifier: Classifier? = null
    private var modelError: String? = null
    /** The photo waiting for "Classify anyway" after a failed acquisition check. */
    private var pending: Pixels? = null
    private var showingPhoto = false

    private val requestCamera = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else status.setText(R.string.camera_denied)
    }

    private val pickImage = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri: Uri? ->
        if (uri != null) onGalleryImage(uri)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        preview = findViewById(R.id.preview)
        photo = findViewById(R.id.photo)
        guide = findViewById(R.id.guide)
        status = findViewById(R.id.status)
        results = findViewById(R.id.results)
        captureButton = findViewById(R.id.capture)
        useAnywayButton = findViewById(R.id.use_anyway)

        captureButton.setOnClickListener { if (showingPhoto) backToCamera() else capture() }
        findViewById<Button>(R.id.gallery).setOnClickListener {
            pickImage.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
        }
        useAnywayButton.setOnClickListener { pending?.let { classify(it) } }

        worker.execute {
            try {
                classifier = Classifier(this)
            } catch (e: java.io.FileNotFoundException) {
                modelError = getString(R.string.no_model)
            } catch (e: Exception) {
                modelError = "The bundled model cannot be used: ${e.message}"
            }
            runOnUiThread {
                val error = modelError
                if (error != null) results.text = error else showModelInfo()
            }
        }

        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            requestCamera.launch(Manifest.permission.CAMERA)
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        worker.execute { classifier?.close() }
        worker.shutdown()
    }

    private fun showModelInfo() {
        val m = classifier?.meta ?: return
        val agreement = m.top1Agreement?.let { String.format(Locale.ROOT, ", %.1f %% top-1 agreement with the trained model", it * 100) } ?: ""
        results.text = "Model: ${m.name} (${m.quantization}), ${m.labels.size} classes, " +
            "${m.input.width}x${m.input.height} ${m.input.resize.id}$agreement."
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            val previewUseCase = Preview.Builder().build().also { it.setSurfaceProvider(preview.surfaceProvider) }
            val capture = ImageCapture.Builder()
                .setCaptureMode(ImageCapture.CAPTURE_MODE_MAXIMIZE_QUALITY)
                .build()
            try {
                provider.unbindAll()
                provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, previewUseCase, capture)
                imageCapture = capture
            } catch (e: Exception) {
                Log.w(TAG, "camera unavailable", e)
                status.text = "Camera unavailable (${e.message}); pick a photo from the gallery."
            }
        }, ContextCompat.getMainExecutor(this))
    }

    private fun capture() {
        val capture = imageCapture ?: return
        captureButton.isEnabled = false
        capture.takePicture(worker, object : ImageCapture.OnImageCapturedCallback() {
            override fun onCaptureSuccess(image: ImageProxy) {
                val rotation = image.imageInfo.rotationDegrees
                val bitmap: Bitmap = try {
                    ImageIO.rotate(image.toBitmap(), rotation)
                } finally {
                    image.close()
                }
                val full = ImageIO.fromBitmap(bitmap)
                // The square the user saw in the preview, in photo pixels.
                val r = Framing.guideInImage(full.width, full.height, preview.width, preview.height)
                val crop = Pixels(Framing.crop(full.argb, full.width, r), r.size, r.size)
                val shown = Bitmap.createBitmap(crop.argb, crop.width, crop.height, Bitmap.Config.ARGB_8888)
                runOnUiThread {
                    captureButton.isEnabled = true
                    showPhoto(shown)
                }
                checkAcquisition(crop, Region(0, 0, crop.width))
            }

            override fun onError(exc: ImageCaptureException) {
                runOnUiThread {
                    captureButton.isEnabled = true
                    status.text = "Capture failed: ${exc.message}"
                }
            }
        })
    }

    private fun onGalleryImage(uri: Uri) {
        worker.execute {
            val px = try {
                ImageIO.decode { contentResolver.openInputStream(uri) ?: throw java.io.FileNotFoundException(uri.toString()) }
            } catch (e: Exception) {
                runOnUiThread { status.text = "Cannot read that image: ${e.message}" }
                return@execute
            }
            val shown = Bitmap.createBitmap(px.argb, px.width, px.height, Bitmap.Config.ARGB_8888)
            runOnUiThread { showPhoto(shown) }
            checkAcquisition(px, Framing.guide(px.width, px.height))
        }
    }

    /** Runs on the worker: acquisition checks on [region] of [px], then classify or ask to retake. */
    private fun checkAcquisition(px: Pixels, region: Region) {
        val report = Acquisition.check(Framing.crop(px.argb, px.width, region), region.size, region.size)
        if (report.ok) {
            classify(px)
        } else {
            pending = px
            runOnUiThread {
                status.text = getString(R.string.acquisition_issues, report.issues.joinToString(" ") { it.message }) +
                    "\n" + figures(report)
                results.text = ""
                useAnywayButton.visibility = View.VISIBLE
            }
        }
    }

    private fun figures(r: AcquisitionReport): String =
        String.format(Locale.ROOT, "(sharpness %.0f, brightness %.0f/255, glare %.1f %%)", r.sharpness, r.meanLuma, r.brightFraction * 100)

    private fun classify(px: Pixels) {
        pending = null
        runOnUiThread {
            useAnywayButton.visibility = View.GONE
            status.setText(R.string.classifying)
        }
        worker.execute {
            val clf = classifier
            if (clf == null) {
                runOnUiThread { status.text = modelError ?: getString(R.string.no_model) }
                return@execute
            }
            val started = System.nanoTime()
            val result = try {
                clf.classify(px.argb, px.width, px.height)
            } catch (e: Exception) {
                runOnUiThread { status.text = "Classification failed: ${e.message}" }
                return@execute
            }
            val ms = (System.nanoTime() - started) / 1e6
            runOnUiThread {
                status.text = String.format(Locale.ROOT, "Classified on the phone in %.0f ms.", ms)
                results.text = render(result)
            }
        }
    }

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
        sb.append("\n").append(getString(R.string.not_a_diagnosis))
        return sb.toString()
    }

    private fun showPhoto(bitmap: Bitmap) {
        showingPhoto = true
        photo.setImageBitmap(bitmap)
        photo.visibility = View.VISIBLE
        preview.visibility = View.INVISIBLE
        guide.visibility = View.GONE
        captureButton.setText(R.string.retake)
    }

    private fun backToCamera() {
        showingPhoto = false
        pending = null
        photo.visibility = View.GONE
        photo.setImageDrawable(null)
        preview.visibility = View.VISIBLE
        guide.visibility = View.VISIBLE
        useAnywayButton.visibility = View.GONE
        captureButton.setText(R.string.capture)
        status.setText(R.string.hint_frame)
        if (classifier != null) showModelInfo()
    }

    companion object {
        private const val TAG = "EdgeDerm"
    }
}
