package bench.kstreams;

import java.util.function.UnaryOperator;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;

/**
 * Forwards each record (key unchanged; value unchanged, or through the transform) and asks for
 * a commit every txnMaxRecords records. One instance per task; the counts live in RunState.
 *
 * <p>ProcessorContext.commit() only requests a commit: the stream thread commits all its tasks
 * (one transaction under exactly_once_v2) after the record being processed.
 */
final class CopyProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    private final RunState state;
    private final UnaryOperator<byte[]> transform;
    private ProcessorContext<byte[], byte[]> context;

    CopyProcessor(RunState state, UnaryOperator<byte[]> transform) {
        this.state = state;
        this.transform = transform;
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        if (!state.admit()) {
            return;
        }
        byte[] value = transform == null ? record.value() : transform.apply(record.value());
        context.forward(record.withValue(value));
        if (state.forwardedOne()) {
            context.commit();
        }
    }
}
