package org.edgederm.demo

import android.content.Context
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.graphics.Path
import android.util.AttributeSet
import android.view.View
import org.edgederm.demo.core.Framing

/** The framing guide: a centred square (Framing.guide) with the outside dimmed and a centre cross. */
class GuideOverlayView @JvmOverloads constructor(context: Context, attrs: AttributeSet? = null) : View(context, attrs) {
    private val dim = Paint().apply { color = Color.argb(110, 0, 0, 0); style = Paint.Style.FILL }
    private val frame = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = Color.WHITE
        style = Paint.Style.STROKE
        strokeWidth = 3f * resources.displayMetrics.density
    }
    private val hole = Path()

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val r = Framing.guide(width, height)
        val l = r.left.toFloat()
        val t = r.top.toFloat()
        val s = r.size.toFloat()
        hole.reset()
        hole.fillType = Path.FillType.EVEN_ODD
        hole.addRect(0f, 0f, width.toFloat(), height.toFloat(), Path.Direction.CW)
        hole.addRect(l, t, l + s, t + s, Path.Direction.CW)
        canvas.drawPath(hole, dim)
        canvas.drawRect(l, t, l + s, t + s, frame)
        val cx = l + s / 2
        val cy = t + s / 2
        val arm = s / 20
        canvas.drawLine(cx - arm, cy, cx + arm, cy, frame)
        canvas.drawLine(cx, cy - arm, cx, cy + arm, frame)
    }
}
