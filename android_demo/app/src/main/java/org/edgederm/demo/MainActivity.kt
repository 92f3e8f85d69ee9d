package org.edgederm.demo

import android.Manifest
import android.content.pm.PackageManager
import android.net.Uri
import android.os.Bundle
import android.util.Log
import android.util.Size
import android.view.View
import android.widget.Button
import android.widget.ImageView
import android.widget.RadioGroup
import android.widget.SeekBar
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.enableEdgeToEdge
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.activity.viewModels
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageCapture
import androidx.camera.core.ImageCaptureException
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.core.resolutionselector.AspectRatioStrategy
import androidx.camera.core.resolutionselector.ResolutionSelector
import androidx.camera.core.resolutionselector.ResolutionStrategy
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import androidx.core.view.ViewCompat
import androidx.core.view.WindowInsetsCompat
import org.edgederm.demo.core.Accelerator
import org.edgederm.demo.core.ImageBudget
import org.edgederm.demo.core.InferenceSettings
import org.edgederm.demo.core.Threads

/**
 * Take a photo (CameraX, kept in memory only) or pick one from the gallery; check sharpness,
 * exposure and framing; classify on the phone; show the top 3 with triage groups.
 *
 * Thin glue: the model, the worker thread and what the screen shows live in [ClassifierViewModel]
 * (they survive rotation); decisions that can be unit-tested are in `core/`. Camera photos are
 * cropped to the framing guide (what the user aimed at); gallery photos are classified whole, as
 * `edge-derm predict` does.
 */
class MainActivity : ComponentActivity() {
    private val model: ClassifierViewModel by viewModels()

    private lateinit var preview: PreviewView
    private lateinit var photo: ImageView
    private lateinit var guide: View
    private lateinit var modelInfo: TextView
    private lateinit var status: TextView
    private lateinit var results: TextView
    private lateinit var captureButton: Button
    private lateinit var galleryButton: Button
    private lateinit var useAnywayButton: Button
    private lateinit var accelerator: RadioGroup
    private lateinit var threads: SeekBar
    private lateinit var threadsLabel: TextView

    private var imageCapture: ImageCapture? = null
    private var showingPhoto = false

    private val requestCamera = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else status.setText(R.string.camera_denied)
    }

    private val pickImage = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri: Uri? ->
        if (uri != null) model.onGalleryImage(uri)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        // targetSdk 35 draws edge to edge: the root view pads itself by the system bars and cutout.
        enableEdgeToEdge()
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        ViewCompat.setOnApplyWindowInsetsListener(findViewById(R.id.root)) { v, insets ->
            val bars = insets.getInsets(WindowInsetsCompat.Type.systemBars() or WindowInsetsCompat.Type.displayCutout())
            v.setPadding(bars.left, bars.top, bars.right, bars.bottom)
            WindowInsetsCompat.CONSUMED
        }
        preview = findViewById(R.id.preview)
        photo = findViewById(R.id.photo)
        guide = findViewById(R.id.guide)
        modelInfo = findViewById(R.id.model_info)
        status = findViewById(R.id.status)
        results = findViewById(R.id.results)
        captureButton = findViewById(R.id.capture)
        galleryButton = findViewById(R.id.gallery)
        useAnywayButton = findViewById(R.id.use_anyway)
        accelerator = findViewById(R.id.accelerator)
        threads = findViewById(R.id.threads)
        threadsLabel = findViewById(R.id.threads_label)

        captureButton.setOnClickListener { if (showingPhoto) model.clearPhoto() else capture() }
        galleryButton.setOnClickListener {
            pickImage.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
        }
        useAnywayButton.setOnClickListener { model.classifyAnyway() }
        setUpSettings(model.screen.value!!.settings)
        model.screen.observe(this) { render(it) }

        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            requestCamera.launch(Manifest.permission.CAMERA)
        }
    }

    private fun setUpSettings(initial: InferenceSettings) {
        threads.max = Threads.max(model.cores) - 1 // SeekBar.setMin needs API 26: progress is threads - 1
        threads.progress = initial.threads - 1
        threadsLabel.text = getString(R.string.threads_label, initial.threads)
        accelerator.check(if (initial.accelerator == Accelerator.GPU) R.id.accelerator_gpu else R.id.accelerator_cpu)
        accelerator.setOnCheckedChangeListener { _, _ -> model.applySettings(chosenSettings()) }
        threads.setOnSeekBarChangeListener(object : SeekBar.OnSeekBarChangeListener {
            override fun onProgressChanged(bar: SeekBar, progress: Int, fromUser: Boolean) {
                threadsLabel.text = getString(R.string.threads_label, progress + 1)
            }

            override fun onStartTrackingTouch(bar: SeekBar) = Unit

            // Reload once the finger is lifted, not for every step on the way.
            override fun onStopTrackingTouch(bar: SeekBar) = model.applySettings(chosenSettings())
        })
    }

    private fun chosenSettings(): InferenceSettings = InferenceSettings(
        if (accelerator.checkedRadioButtonId == R.id.accelerator_gpu) Accelerator.GPU else Accelerator.CPU,
        Threads.clamp(threads.progress + 1, model.cores)
    )

    private fun render(s: Screen) {
        modelInfo.text = s.model
        status.text = s.status ?: getString(R.string.hint_frame)
        results.text = s.results
        useAnywayButton.visibility = if (s.canClassifyAnyway) View.VISIBLE else View.GONE
        captureButton.isEnabled = !s.busy
        galleryButton.isEnabled = !s.busy
        // a RadioGroup's own flag does not reach its buttons: each one is switched
        for (i in 0 until accelerator.childCount) accelerator.getChildAt(i).isEnabled = !s.busy
        threads.isEnabled = !s.busy
        val bitmap = s.photo
        showingPhoto = bitmap != null
        photo.setImageBitmap(bitmap)
        photo.visibility = if (bitmap != null) View.VISIBLE else View.GONE
        preview.visibility = if (bitmap != null) View.INVISIBLE else View.VISIBLE
        guide.visibility = if (bitmap != null) View.GONE else View.VISIBLE
        captureButton.setText(if (bitmap != null) R.string.retake else R.string.capture)
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            val previewUseCase = Preview.Builder().build().also { it.setSurfaceProvider(preview.surfaceProvider) }
            // About 3 MP, not the sensor's full 12-50 MP: the model sees a few hundred pixels.
            val resolution = ResolutionSelector.Builder()
                .setAspectRatioStrategy(AspectRatioStrategy.RATIO_4_3_FALLBACK_AUTO_STRATEGY)
                .setResolutionStrategy(
                    ResolutionStrategy(
                        Size(ImageBudget.CAPTURE_WIDTH, ImageBudget.CAPTURE_HEIGHT),
                        ResolutionStrategy.FALLBACK_RULE_CLOSEST_LOWER_THEN_HIGHER
                    )
                )
                .build()
            val capture = ImageCapture.Builder()
                .setCaptureMode(ImageCapture.CAPTURE_MODE_MAXIMIZE_QUALITY)
                .setResolutionSelector(resolution)
                .build()
            try {
                provider.unbindAll()
                provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, previewUseCase, capture)
                imageCapture = capture
            } catch (e: Exception) {
                Log.w(TAG, "camera unavailable", e)
                status.text = getString(R.string.camera_unavailable, e.message ?: "")
            }
        }, ContextCompat.getMainExecutor(this))
    }

    private fun capture() {
        val capture = imageCapture ?: return
        val viewW = preview.width
        val viewH = preview.height
        model.captureStarted()
        // Callbacks arrive on the main executor, which is never shut down; the ViewModel hands the
        // frame to its worker, or closes it when the worker is already closed.
        capture.takePicture(ContextCompat.getMainExecutor(this), object : ImageCapture.OnImageCapturedCallback() {
            override fun onCaptureSuccess(image: ImageProxy) = model.onCapture(image, viewW, viewH)

            override fun onError(exc: ImageCaptureException) = model.captureFailed(exc.message)
        })
    }

    companion object {
        private const val TAG = "EdgeDerm"
    }
}
