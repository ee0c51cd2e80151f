package bench.kstreams;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.UnaryOperator;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.RemoveMembersFromConsumerGroupOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.AppInfoParser;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The Kafka Streams contender: {@code java -cp ... bench.kstreams.Main SPEC.json}.
 *
 * <p>Topology: source(input, byte[] serdes) -> CopyProcessor (identity, or the Avro transcoder)
 * -> sink(output). processing.guarantee=exactly_once_v2, one stream thread, commits every
 * spec.txn_max_records records (ProcessorContext.commit()) or commit.interval.ms =
 * spec.txn_interval_s, producer linger.ms = spec.linger_ms, max.poll.records =
 * spec.consume_batch. After spec.records records it asks for a last commit and closes cleanly
 * (a clean close commits the open transaction); records polled after the limit are dropped.
 */
public final class Main {
    private static final long CLOSE_TIMEOUT_S = 60;

    private Main() {}

    public static void main(String[] args) throws Exception {
        double mainAt = RunState.monotonicSeconds();
        long jvmUptimeAtMainMs = ManagementFactory.getRuntimeMXBean().getUptime();
        RunSpec spec = RunSpec.read(Path.of(args[0]));
        UnaryOperator<byte[]> transform = switch (spec.workload()) {
            case "raw" -> null;
            case "avro" -> OrderTranscoder.fromRegistry(spec.schemaRegistryUrl(), spec.schemaId());
            default -> throw new IllegalArgumentException("unknown workload " + spec.workload());
        };
        RunState state = new RunState(spec.records(), spec.txnMaxRecords(), spec.markerPath());

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(spec.inputTopic(), Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .process(() -> new CopyProcessor(state, transform))
                .to(spec.outputTopic(), Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        Topology topology = builder.build();

        Properties props = config(spec);
        KafkaStreams streams = new KafkaStreams(topology, props);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        double[] runningAt = {Double.NaN};
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING && Double.isNaN(runningAt[0])) {
                runningAt[0] = RunState.monotonicSeconds();
            }
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.PENDING_ERROR) {
                state.done.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            failure.compareAndSet(null, e);
            state.done.countDown();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // SIGTERM (the harness's timeout) closes the client too: the hook wakes main() and waits
        // until main() has closed the client and written the report (the JVM halts once the
        // hooks return).
        CountDownLatch finished = new CountDownLatch(1);
        Thread hook = new Thread(() -> {
            state.done.countDown();
            try {
                finished.await(CLOSE_TIMEOUT_S + 15, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        Runtime.getRuntime().addShutdownHook(hook);

        double startAt = RunState.monotonicSeconds();
        streams.start();
        state.done.await();
        double limitAt = RunState.monotonicSeconds();
        Map<String, Object> metrics = threadMetrics(streams);
        boolean closed = streams.close(Duration.ofSeconds(CLOSE_TIMEOUT_S));
        double closedAt = RunState.monotonicSeconds();
        String leftGroup = removeGroupMembers(spec);

        ObjectNode report = readReport(spec.reportPath());
        report.put("kafka_streams", AppInfoParser.getVersion());
        report.put("java", System.getProperty("java.vm.name") + " " + Runtime.version());
        report.put("jvm_uptime_at_main_s", jvmUptimeAtMainMs / 1000.0);
        if (report.hasNonNull("exec_at")) {
            // exec of the JVM (written by bench/contenders/kstreams.py) -> first line of main().
            report.put("jvm_start_s", mainAt - report.get("exec_at").asDouble());
        }
        report.put("main_to_running_s", runningAt[0] - mainAt);
        report.put("running_to_first_record_s", state.firstRecordAt - runningAt[0]);
        report.put("main_at", mainAt);
        report.put("streams_start_at", startAt);
        report.put("running_at", runningAt[0]);
        report.put("first_record_at", state.firstRecordAt);
        report.put("limit_reached_at", limitAt);
        report.put("closed_at", closedAt);
        report.put("closed_cleanly", closed);
        report.put("group_members_removed", leftGroup);
        report.put("records_forwarded", state.forwarded);
        report.put("records_dropped_after_limit", state.droppedAfterLimit);
        report.put("commits_requested", state.commitsRequested);
        report.putPOJO("config", new java.util.TreeMap<>(props));
        ObjectNode m = report.putObject("thread_metrics");
        metrics.forEach((k, v) -> m.putPOJO(k, v));
        if (failure.get() != null) {
            report.put("failure", failure.get().toString());
        }
        RunState.writeAtomically(
                spec.reportPath(), new ObjectMapper().writerWithDefaultPrettyPrinter().writeValueAsString(report));
        finished.countDown();
        boolean ok = failure.get() == null && state.forwarded == spec.records() && closed;
        try {
            Runtime.getRuntime().removeShutdownHook(hook);
        } catch (IllegalStateException e) {
            return; // a SIGTERM's shutdown is under way: the JVM exits when the hook returns
        }
        System.exit(ok ? 0 : 1);
    }

    static Properties config(RunSpec spec) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, spec.groupId());
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, spec.bootstrapServers());
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Math.round(spec.txnIntervalS() * 1000));
        p.put(StreamsConfig.STATE_DIR_CONFIG, spec.workDir().resolve("kstreams-state-" + spec.groupId()).toString());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), spec.consumeBatch());
        // Kafka Streams raises the producer's linger.ms to 100; every contender uses the run's.
        p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), spec.lingerMs());
        if (spec.retryBackoffMs() != null) {
            p.put(ConsumerConfig.RETRY_BACKOFF_MS_CONFIG, spec.retryBackoffMs()); // every client
        }
        // fetch.queue.backoff.ms is librdkafka's; the Java consumer has no such pause to tune.
        return p;
    }

    /**
     * Kafka Streams' consumer does not send LeaveGroup on close (and KafkaStreams.CloseOptions'
     * leaveGroup only removes static members), so the group would stay "not empty" until its
     * session times out and the harness could not delete it. After the close, outside the
     * window, remove the members through the admin API.
     */
    private static String removeGroupMembers(RunSpec spec) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, spec.bootstrapServers());
        try (Admin admin = Admin.create(p)) {
            admin.removeMembersFromConsumerGroup(spec.groupId(), new RemoveMembersFromConsumerGroupOptions())
                    .all()
                    .get(15, TimeUnit.SECONDS);
            return "ok";
        } catch (Exception e) {
            return e.toString();
        }
    }

    private static Map<String, Object> threadMetrics(KafkaStreams streams) {
        Map<String, Object> out = new java.util.TreeMap<>();
        for (Map.Entry<MetricName, ? extends Metric> e : streams.metrics().entrySet()) {
            MetricName name = e.getKey();
            if (name.group().equals("stream-thread-metrics")
                    && (name.name().startsWith("commit-") || name.name().startsWith("process-")
                            || name.name().startsWith("poll-"))) {
                out.put(name.name(), e.getValue().metricValue());
            }
        }
        return out;
    }

    private static ObjectNode readReport(Path path) throws java.io.IOException {
        ObjectMapper mapper = new ObjectMapper();
        if (Files.exists(path)) {
            return (ObjectNode) mapper.readTree(Files.readString(path));
        }
        return mapper.createObjectNode();
    }
}
