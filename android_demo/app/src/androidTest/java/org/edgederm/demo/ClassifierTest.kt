package org.edgederm.demo

import android.os.Bundle
import android.util.Log
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import java.security.MessageDigest
import java.util.Locale
import org.edgederm.demo.core.ExpectedResults
import org.edgederm.demo.core.Triage
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Test
import org.junit.runner.RunWith

/**
 * Classifies the samples that `edge-derm export android` bundled (androidTest assets) with the
 * app's model on the phone, and compares with the host's predictions (expected_results.json).
 * Per-class accuracy on the samples is logged (tag EdgeDermTest) and reported as test status.
 */
@RunWith(AndroidJUnit4::class)
class ClassifierTest {
    private val instrumentation = InstrumentationRegistry.getInstrumentation()
    private val testAssets = instrumentation.context.assets
    private val appContext = instrumentation.targetContext

    private fun expected(): ExpectedResults {
        val names = testAssets.list("")?.toList() ?: emptyList()
        assumeTrue(
            "no $EXPECTED in androidTest assets: run `edge-derm export android CONVERT_DIR --samples DATASET --force`",
            EXPECTED in names
        )
        return ExpectedResults.parse(testAssets.open(EXPECTED).bufferedReader(Charsets.UTF_8).use { it.readText() })
    }

    private fun sha256OfModel(): String {
        val digest = MessageDigest.getInstance("SHA-256")
        appContext.assets.open(Classifier.MODEL_ASSET).use { input ->
            val buf = ByteArray(1 shl 16)
            while (true) {
                val n = input.read(buf)
                if (n < 0) break
                digest.update(buf, 0, n)
            }
        }
        return digest.digest().joinToString("") { String.format(Locale.ROOT, "%02x", it) }
    }

    @Test
    fun bundledModelLoadsAndMatchesItsMetadata() {
        Classifier.load(appContext).use { clf ->
            val labels = appContext.assets.open(Classifier.LABELS_ASSET).bufferedReader().use { it.readLines() }
                .filter { it.isNotBlank() }
            assertEquals(clf.meta.labels, labels)
        }
    }

    @Test
    fun samplesMatchHostPredictions() {
        val expected = expected()
        assertEquals("model.tflite changed since the samples were exported; export again", expected.modelSha256, sha256OfModel())
        val failures = ArrayList<String>()
        val predicted = ArrayList<String>()
        Classifier.load(appContext).use { clf ->
            assertEquals(expected.labels, clf.meta.labels)
            for (sample in expected.samples) {
                val px = ImageIO.decode { testAssets.open(sample.file) }
                val probs = clf.probabilities(px.argb, px.width, px.height)
                predicted.add(clf.meta.labels[Triage.topIndices(probs, 1)[0]])
                expected.compare(sample, probs)?.let { failures.add(it) }
            }
        }
        val status = Bundle()
        for ((label, cell) in expected.perClassAccuracy(predicted)) {
            val line = String.format(Locale.ROOT, "%s: %d/%d correct", label, cell[0], cell[1])
            Log.i(TAG, line)
            status.putString("accuracy_$label", line)
        }
        Log.i(TAG, "${expected.samples.size - failures.size}/${expected.samples.size} samples match the host")
        instrumentation.sendStatus(0, status)
        assertTrue("phone and host disagree:\n" + failures.joinToString("\n"), failures.isEmpty())
    }

    companion object {
        private const val TAG = "EdgeDermTest"
        private const val EXPECTED = "expected_results.json"
    }
}
