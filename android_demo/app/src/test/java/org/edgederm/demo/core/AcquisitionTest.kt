package org.edgederm.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test

class AcquisitionTest {
    private val size = 128

    /** Skin-like textured background with a dark disc of radius [r] at ([cx], [cy]). */
    private fun lesion(cx: Int, cy: Int, r: Int = 16, base: Int = 180, sharp: Boolean = true): IntArray =
        IntArray(size * size) { i ->
            val x = i % size
            val y = i / size
            val d = Math.sqrt(((x - cx) * (x - cx) + (y - cy) * (y - cy)).toDouble())
            val v = if (sharp) {
                (if (d <= r) base - 100 else base) + (if ((x + y) % 2 == 0) 12 else -12)
            } else {
                // A soft cone instead of an edge: what a defocused lesion looks like.
                base - (100 * Math.max(0.0, 1.0 - d / (2 * r))).toInt()
            }
            Preprocess.argb(v, (v * 0.8).toInt(), (v * 0.7).toInt())
        }

    @Test
    fun centredSharpLesionPasses() {
        val report = Acquisition.check(lesion(64, 64), size, size)
        assertTrue(report.issues.toString(), report.ok)
        assertTrue(report.centreOffset < 0.05)
    }

    @Test
    fun flatImageIsBlurredAndHasNoLesion() {
        val flat = IntArray(size * size) { Preprocess.argb(150, 120, 100) }
        val report = Acquisition.check(flat, size, size)
        assertEquals(0.0, report.sharpness, 1e-9)
        assertTrue(AcquisitionIssue.BLURRY in report.issues)
        assertTrue(AcquisitionIssue.NO_CONTRAST in report.issues)
    }

    @Test
    fun smoothLesionIsBlurred() {
        val report = Acquisition.check(lesion(64, 64, sharp = false), size, size)
        assertTrue(AcquisitionIssue.BLURRY in report.issues)
        assertFalse(AcquisitionIssue.OFF_CENTRE in report.issues)
    }

    @Test
    fun offCentreLesionIsFlagged() {
        val report = Acquisition.check(lesion(20, 20, r = 10), size, size)
        assertTrue(AcquisitionIssue.OFF_CENTRE in report.issues)
    }

    @Test
    fun exposureChecks() {
        val dark = Acquisition.check(lesion(64, 64, base = 40), size, size)
        assertTrue(AcquisitionIssue.TOO_DARK in dark.issues)
        val white = IntArray(size * size) { i -> if (i % size < 40) Preprocess.argb(255, 255, 255) else Preprocess.argb(150, 120, 100) }
        val glare = Acquisition.check(white, size, size)
        assertTrue(glare.brightFraction > 0.3)
        assertTrue(AcquisitionIssue.GLARE in glare.issues)
    }

    @Test
    fun laplacianOfCheckerboard() {
        // Alternating 0/10 on 6x6: the 16 interior Laplacians are +-40 (8 each), mean 0, variance 1600.
        val g = DoubleArray(36) { if ((it % 6 + it / 6) % 2 == 0) 0.0 else 10.0 }
        assertEquals(1600.0, Acquisition.laplacianVariance(g, 6, 6), 1e-9)
    }

    @Test
    fun guideIsCentredSquareAndCropCopiesIt() {
        val r = Framing.guide(100, 60, 0.5)
        assertEquals(30, r.size)
        assertEquals(35, r.left)
        assertEquals(15, r.top)
        val src = IntArray(100 * 60) { it }
        val crop = Framing.crop(src, 100, r)
        assertEquals(15 * 100 + 35, crop[0])
        assertEquals((15 + 29) * 100 + 35 + 29, crop[crop.size - 1])
    }

    @Test
    fun guideMapsFromPreviewToPhoto() {
        // A 4000x3000 photo filling a 1000x1000 view: scale 1/3 (height), the 700 px guide is 2100 px.
        val r = Framing.guideInImage(4000, 3000, 1000, 1000)
        assertEquals(2100, r.size)
        assertEquals(950, r.left)
        assertEquals(450, r.top)
        // Never larger than the photo.
        assertEquals(10, Framing.guideInImage(10, 10, 1000, 1000, 2.0).size)
    }
}
