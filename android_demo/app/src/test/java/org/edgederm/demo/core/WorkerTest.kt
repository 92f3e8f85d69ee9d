package org.edgederm.demo.core

import java.util.Collections
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test

class WorkerTest {
    @Test
    fun runsTasksInOrderOnOneThread() {
        val w = Worker("test worker")
        val seen = Collections.synchronizedList(ArrayList<String>())
        for (i in 0 until 20) assertTrue(w.post(Runnable { seen.add("$i ${Thread.currentThread().name}") }))
        w.close()
        assertTrue(w.awaitClosed(5000))
        assertEquals((0 until 20).map { "$it test worker" }, seen)
    }

    @Test
    fun afterCloseTasksAreRejectedAndReleased() {
        val w = Worker("closing")
        val gate = CountDownLatch(1)
        val order = Collections.synchronizedList(ArrayList<String>())
        w.post(Runnable { gate.await(5, TimeUnit.SECONDS); order.add("queued before close") })
        w.close(Runnable { order.add("last") })
        assertTrue(w.isClosed)
        var released = false
        val accepted = w.post(Runnable { order.add("too late") }, Runnable { released = true })
        assertFalse(accepted)
        assertTrue("the rejected task's resources were not released", released)
        gate.countDown()
        assertTrue(w.awaitClosed(5000))
        // Work queued before close finishes, then the closing task; the late one never runs.
        assertEquals(listOf("queued before close", "last"), order)
        w.close() // closing twice is harmless
    }
}
