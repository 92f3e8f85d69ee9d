package org.edgederm.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import androidx.exifinterface.media.ExifInterface
import java.io.InputStream
import org.edgederm.demo.core.ImageBudget
import org.edgederm.demo.core.Region

/** An image as ARGB pixels, the form the core code works on. */
class Pixels(val argb: IntArray, val width: Int, val height: Int)

/**
 * Decoding as edge_derm.data.images.load_rgb does (EXIF orientation applied, transparency
 * composited on white, no density scaling), within [ImageBudget]: images above
 * [ImageBudget.MAX_DECODE_PIXELS] are decoded with a power-of-two inSampleSize (the host would
 * use them whole). One bitmap is kept (shown on screen) plus its pixels as an IntArray; a
 * rotated or cropped copy replaces its source, which is recycled at once.
 */
object ImageIO {
    /** The image behind [open] (opened up to three times), oriented, within the pixel budget. */
    fun decodeBitmap(open: () -> InputStream): Bitmap {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        open().use { BitmapFactory.decodeStream(it, null, bounds) }
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw IllegalArgumentException("not a readable image")
        val opts = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inScaled = false
            inSampleSize = ImageBudget.sampleSize(bounds.outWidth, bounds.outHeight)
        }
        val raw = open().use { BitmapFactory.decodeStream(it, null, opts) }
            ?: throw IllegalArgumentException("not a readable image")
        val orientation = open().use {
            ExifInterface(it).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
        }
        return replacing(raw, orient(raw, orientation))
    }

    /** [decodeBitmap]'s pixels (the bitmap is not kept). */
    fun decode(open: () -> InputStream): Pixels {
        val bitmap = decodeBitmap(open)
        try {
            return fromBitmap(bitmap)
        } finally {
            bitmap.recycle()
        }
    }

    fun fromBitmap(bitmap: Bitmap): Pixels {
        val w = bitmap.width
        val h = bitmap.height
        val px = IntArray(w * h)
        bitmap.getPixels(px, 0, w, 0, 0, w, h) // unpremultiplied ARGB
        for (i in px.indices) {
            val a = px[i] ushr 24
            if (a != 0xFF) px[i] = onWhite(px[i], a)
        }
        return Pixels(px, w, h)
    }

    private fun onWhite(p: Int, a: Int): Int {
        fun mix(c: Int) = (c * a + 255 * (255 - a) + 127) / 255
        return (0xFF shl 24) or (mix((p shr 16) and 0xFF) shl 16) or (mix((p shr 8) and 0xFF) shl 8) or mix(p and 0xFF)
    }

    /** [next], after recycling [previous] when it is a different bitmap. */
    private fun replacing(previous: Bitmap, next: Bitmap): Bitmap {
        if (next !== previous) previous.recycle()
        return next
    }

    /** Rotate / mirror by an EXIF orientation (exact pixel moves, no filtering). */
    fun orient(bitmap: Bitmap, orientation: Int): Bitmap {
        val m = Matrix()
        when (orientation) {
            ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> m.setScale(-1f, 1f)
            ExifInterface.ORIENTATION_ROTATE_180 -> m.setRotate(180f)
            ExifInterface.ORIENTATION_FLIP_VERTICAL -> m.setScale(1f, -1f)
            ExifInterface.ORIENTATION_TRANSPOSE -> { m.setRotate(90f); m.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_ROTATE_90 -> m.setRotate(90f)
            ExifInterface.ORIENTATION_TRANSVERSE -> { m.setRotate(-90f); m.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_ROTATE_270 -> m.setRotate(-90f)
            else -> return bitmap
        }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, m, false)
    }

    /**
     * The guide square [r] (in [frame]'s pixels, Framing.guideInFrame) cut out of a camera frame,
     * turned upright by [degrees] and capped at [ImageBudget.MAX_CROP_SIDE], in one copy; the
     * frame is recycled.
     */
    fun cropUpright(frame: Bitmap, degrees: Int, r: Region): Bitmap {
        val scale = ImageBudget.cropScale(r.size).toFloat()
        val m = Matrix().apply {
            setRotate(degrees.toFloat())
            postScale(scale, scale)
        }
        val crop = Bitmap.createBitmap(frame, r.left, r.top, r.size, r.size, m, scale < 1f)
        return replacing(frame, crop)
    }
}
