package bench.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** The fields of bench/spec.py's RunSpec that this contender uses (read from the spec JSON). */
record RunSpec(
        String workload,
        String bootstrapServers,
        String inputTopic,
        String outputTopic,
        long records,
        String groupId,
        int consumeBatch,
        long txnMaxRecords,
        double txnIntervalS,
        int lingerMs,
        Integer retryBackoffMs,
        Integer fetchQueueBackoffMs,
        String schemaRegistryUrl,
        Integer schemaId,
        Path markerPath,
        Path reportPath,
        Path workDir) {

    static RunSpec read(Path path) throws IOException {
        JsonNode j = new ObjectMapper().readTree(Files.readString(path));
        return new RunSpec(
                j.get("workload").asText(),
                j.get("bootstrap_servers").asText(),
                j.get("input_topic").asText(),
                j.get("output_topic").asText(),
                j.get("records").asLong(),
                j.get("group_id").asText(),
                j.get("consume_batch").asInt(),
                j.get("txn_max_records").asLong(),
                j.get("txn_interval_s").asDouble(),
                j.get("linger_ms").asInt(),
                optionalInt(j, "retry_backoff_ms"),
                optionalInt(j, "fetch_queue_backoff_ms"),
                j.get("schema_registry_url").asText(),
                optionalInt(j, "schema_id"),
                Path.of(j.get("marker_path").asText()),
                Path.of(j.get("report_path").asText()),
                Path.of(j.get("work_dir").asText()));
    }

    private static Integer optionalInt(JsonNode j, String name) {
        JsonNode v = j.get(name);
        return v == null || v.isNull() ? null : v.asInt();
    }
}
