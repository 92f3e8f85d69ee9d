package org.edgederm.demo.core

import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import java.util.concurrent.RejectedExecutionException
import java.util.concurrent.TimeUnit

/**
 * One background thread for loading the model and classifying, owned by the ViewModel (so it outlives
 * rotations). After [close], [post] never throws: it runs [post]'s `onRejected` instead, which
 * releases what the task would have (a camera ImageProxy, say). Camera callbacks are delivered on
 * the main executor and only then posted here, so no CameraX callback reaches a shut-down executor.
 */
class Worker(name: String) {
    private val lock = Any()
    private var closed = false
    private val executor: ExecutorService = Executors.newSingleThreadExecutor { r -> Thread(r, name) }

    val isClosed: Boolean get() = synchronized(lock) { closed }

    /** Runs [task] on the worker; false (and [onRejected] on this thread) once closed. */
    fun post(task: Runnable, onRejected: Runnable? = null): Boolean {
        val accepted = synchronized(lock) {
            if (closed) {
                false
            } else {
                try {
                    executor.execute(task)
                    true
                } catch (e: RejectedExecutionException) {
                    false
                }
            }
        }
        if (!accepted) onRejected?.run()
        return accepted
    }

    /** Stops taking tasks; [last] (e.g. closing the interpreter) runs after those already queued. */
    fun close(last: Runnable? = null) {
        synchronized(lock) {
            if (closed) return
            if (last != null) executor.execute(last)
            closed = true
            executor.shutdown()
        }
    }

    /** For tests: wait for queued tasks after [close]. */
    fun awaitClosed(millis: Long): Boolean = executor.awaitTermination(millis, TimeUnit.MILLISECONDS)
}
