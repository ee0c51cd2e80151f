package bench.kstreams;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Locale;
import java.util.concurrent.CountDownLatch;

/**
 * What the processors of all tasks share: the record count toward the run's limit and toward
 * the next record-bound commit, the first-record marker, and the latch main() waits on.
 *
 * <p>The topology runs on one stream thread (num.stream.threads=1), so plain fields suffice;
 * the latch and the volatile fields are read by the main thread.
 */
final class RunState {
    private final long limit;
    private final long txnMaxRecords;
    private final Path markerPath;
    private boolean marked;
    private long sinceCommit;
    volatile long forwarded;
    volatile long droppedAfterLimit;
    volatile long commitsRequested;
    volatile double firstRecordAt = Double.NaN;
    final CountDownLatch done = new CountDownLatch(1);

    RunState(long limit, long txnMaxRecords, Path markerPath) {
        this.limit = limit;
        this.txnMaxRecords = txnMaxRecords;
        this.markerPath = markerPath;
    }

    /** System.nanoTime() reads CLOCK_MONOTONIC on Linux, the clock of Python's time.monotonic(). */
    static double monotonicSeconds() {
        return System.nanoTime() / 1e9;
    }

    static void writeAtomically(Path path, String text) {
        Path tmp = path.resolveSibling("." + path.getFileName() + "." + ProcessHandle.current().pid() + ".tmp");
        try {
            Files.writeString(tmp, text);
            Files.move(tmp, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Called once per consumed record before its work; false once the limit is reached. */
    boolean admit() {
        if (!marked) {
            marked = true;
            firstRecordAt = monotonicSeconds();
            writeAtomically(markerPath, String.format(Locale.ROOT, "%.9f", firstRecordAt));
        }
        if (forwarded >= limit) {
            droppedAfterLimit++;
            return false;
        }
        return true;
    }

    /**
     * Called after a record was forwarded; true when a commit should be requested (every
     * txnMaxRecords records, and at the limit, so the last transaction closes at once).
     */
    boolean forwardedOne() {
        forwarded++;
        sinceCommit++;
        boolean atLimit = forwarded == limit;
        if (atLimit || (txnMaxRecords > 0 && sinceCommit >= txnMaxRecords)) {
            sinceCommit = 0;
            commitsRequested++;
            if (atLimit) {
                done.countDown();
            }
            return true;
        }
        return false;
    }
}
