package org.edgederm.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class ImageBudgetTest {
    private fun decoded(w: Int, h: Int, s: Int) = ImageBudget.decodedSide(w, s).toLong() * ImageBudget.decodedSide(h, s)

    @Test
    fun smallImagesAreDecodedWhole() {
        assertEquals(1, ImageBudget.sampleSize(4000, 2000)) // exactly 8 MP
        assertEquals(1, ImageBudget.sampleSize(1, 1))
        assertEquals(1, ImageBudget.sampleSize(224, 224))
    }

    @Test
    fun fiftyMegapixelsFitTheBudget() {
        // 8160 x 6120 (a 50 MP sensor): 200 MB as ARGB_8888 whole, 12.5 MB at inSampleSize 4.
        val s = ImageBudget.sampleSize(8160, 6120)
        assertEquals(4, s)
        assertTrue(decoded(8160, 6120, s) <= ImageBudget.MAX_DECODE_PIXELS)
        assertTrue(ImageBudget.argbBytes(8160 / s, 6120 / s) < 16_000_000L)
        assertEquals(2, ImageBudget.sampleSize(4000, 3000)) // 12 MP -> 3 MP
        assertEquals(2, ImageBudget.sampleSize(4001, 2000)) // just over the budget
    }

    @Test
    fun sampleIsTheSmallestPowerOfTwoWithinBudget() {
        val sizes = listOf(intArrayOf(8160, 6120), intArrayOf(12000, 9000), intArrayOf(30000, 1), intArrayOf(3, 100000),
            intArrayOf(4097, 4097), intArrayOf(20000, 20000))
        for (budget in listOf(1L, 1000L, 2_000_000L, ImageBudget.MAX_DECODE_PIXELS)) {
            for (wh in sizes) {
                val s = ImageBudget.sampleSize(wh[0], wh[1], budget)
                assertEquals("power of two", 0, s and (s - 1))
                assertTrue("${wh.toList()} at $s over $budget", decoded(wh[0], wh[1], s) <= budget)
                if (s > 1) assertTrue("${wh.toList()}: $s is not the smallest", decoded(wh[0], wh[1], s / 2) > budget)
            }
        }
    }

    @Test
    fun decodedSidesRoundUp() {
        assertEquals(3, ImageBudget.decodedSide(5, 2))
        assertEquals(1, ImageBudget.decodedSide(1, 8))
        assertEquals(1530, ImageBudget.decodedSide(6120, 4))
    }

    @Test(expected = IllegalArgumentException::class)
    fun emptyImageIsRefused() {
        ImageBudget.sampleSize(0, 100)
    }

    @Test
    fun cropScaleCapsTheSide() {
        assertEquals(1.0, ImageBudget.cropScale(1000), 0.0)
        assertEquals(1.0, ImageBudget.cropScale(ImageBudget.MAX_CROP_SIDE), 0.0)
        assertEquals(0.5, ImageBudget.cropScale(2 * ImageBudget.MAX_CROP_SIDE), 1e-12)
    }

    @Test
    fun guideInFrameIsTheUprightGuideInFramePixels() {
        // A 4:3 landscape sensor frame shown upright (rotated 90) in a portrait preview.
        val upright = Framing.guideInImage(1536, 2048, 1080, 1920)
        for (rot in listOf(90, 270, -90, 450)) {
            val r = Framing.guideInFrame(2048, 1536, rot, 1080, 1920)
            assertEquals("rotation $rot", upright.size, r.size)
            assertEquals((2048 - r.size) / 2, r.left)
            assertEquals((1536 - r.size) / 2, r.top)
        }
        // No rotation: exactly guideInImage.
        val same = Framing.guideInFrame(2048, 1536, 0, 1080, 1920)
        val plain = Framing.guideInImage(2048, 1536, 1080, 1920)
        assertEquals(listOf(plain.left, plain.top, plain.size), listOf(same.left, same.top, same.size))
        // 90 and 0 differ for a non-square view, so the rotation is really taken into account.
        assertTrue(upright.size != plain.size)
        // Preview not laid out yet: the plain guide, inside the frame.
        val early = Framing.guideInFrame(2048, 1536, 90, 0, 0)
        assertEquals(Framing.guide(1536, 2048).size, early.size)
        assertTrue(early.left >= 0 && early.top >= 0 && early.left + early.size <= 2048 && early.top + early.size <= 1536)
    }
}
