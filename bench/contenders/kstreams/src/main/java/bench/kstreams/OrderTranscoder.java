package bench.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.function.UnaryOperator;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;

/**
 * The "avro" workload's per-record work, the Java twin of bench.workloads.AvroTranscoder.
 *
 * <p>Per record: check the 5-byte Confluent header (magic 0 + this schema id); decode the Avro
 * binary into a GenericRecord with Apache Avro's GenericDatumReader (strings as Utf8, the
 * array as a list); validate it into an {@link Order} (each field present and of its type,
 * strings decoded to java.lang.String, a new list of the flags), which is what
 * Order.model_validate does; rebuild a new GenericRecord from the Order (model_dump); encode it
 * with GenericDatumWriter after the same header. No object is reused across records except the
 * schema, the reader, the writer and the decoder/encoder buffers (Avro's documented reuse).
 */
final class OrderTranscoder implements UnaryOperator<byte[]> {
    /** The validated record: the fields of bench.workloads.Order. */
    record Order(
            long seq,
            String orderId,
            long customerId,
            String sku,
            int qty,
            double price,
            String currency,
            long ts,
            String status,
            String note,
            List<String> flags) {}

    private final Schema schema;
    private final byte[] header;
    private final GenericDatumReader<GenericRecord> reader;
    private final GenericDatumWriter<GenericRecord> writer;
    private BinaryDecoder decoder;
    private BinaryEncoder encoder;

    OrderTranscoder(Schema schema, int schemaId) {
        this.schema = schema;
        this.header = ByteBuffer.allocate(5).put((byte) 0).putInt(schemaId).array();
        this.reader = new GenericDatumReader<>(schema);
        this.writer = new GenericDatumWriter<>(schema);
    }

    /** Fetch the schema by id from the registry, as a Confluent deserializer does at start-up. */
    static OrderTranscoder fromRegistry(String registryUrl, int schemaId)
            throws IOException, InterruptedException {
        HttpClient http = HttpClient.newHttpClient();
        HttpRequest request =
                HttpRequest.newBuilder(URI.create(registryUrl + "/schemas/ids/" + schemaId)).GET().build();
        HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
        if (response.statusCode() != 200) {
            throw new IOException(
                    "schema " + schemaId + ": registry answered " + response.statusCode() + ": " + response.body());
        }
        JsonNode body = new ObjectMapper().readTree(response.body());
        return new OrderTranscoder(new Schema.Parser().parse(body.get("schema").asText()), schemaId);
    }

    @Override
    public byte[] apply(byte[] value) {
        for (int i = 0; i < header.length; i++) {
            if (value.length < header.length || value[i] != header[i]) {
                throw new IllegalArgumentException("not a Confluent-framed record of this schema");
            }
        }
        try {
            decoder = DecoderFactory.get().binaryDecoder(value, header.length, value.length - header.length, decoder);
            GenericRecord decoded = reader.read(null, decoder);
            GenericRecord rebuilt = dump(validate(decoded));
            ByteArrayOutputStream out = new ByteArrayOutputStream(value.length + 16);
            out.write(header);
            encoder = EncoderFactory.get().binaryEncoder(out, encoder);
            writer.write(rebuilt, encoder);
            encoder.flush();
            return out.toByteArray();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static Order validate(GenericRecord r) {
        return new Order(
                integer(r, "seq"),
                string(r, "order_id"),
                integer(r, "customer_id"),
                string(r, "sku"),
                Math.toIntExact(integer(r, "qty")),
                number(r, "price"),
                string(r, "currency"),
                integer(r, "ts"),
                string(r, "status"),
                r.get("note") == null ? null : string(r, "note"),
                strings(r, "flags"));
    }

    GenericRecord dump(Order o) {
        GenericData.Record r = new GenericData.Record(schema);
        r.put("seq", o.seq());
        r.put("order_id", o.orderId());
        r.put("customer_id", o.customerId());
        r.put("sku", o.sku());
        r.put("qty", o.qty());
        r.put("price", o.price());
        r.put("currency", o.currency());
        r.put("ts", o.ts());
        r.put("status", o.status());
        r.put("note", o.note());
        r.put("flags", new ArrayList<>(o.flags()));
        return r;
    }

    private static Object field(GenericRecord r, String name) {
        Object v = r.get(name);
        if (v == null) {
            throw new IllegalArgumentException(name + ": field required");
        }
        return v;
    }

    private static long integer(GenericRecord r, String name) {
        Object v = field(r, name);
        if (v instanceof Long l) {
            return l;
        }
        if (v instanceof Integer i) {
            return i;
        }
        throw new IllegalArgumentException(name + ": not an integer: " + v.getClass().getName());
    }

    private static double number(GenericRecord r, String name) {
        Object v = field(r, name);
        if (v instanceof Double d) {
            return d;
        }
        if (v instanceof Float || v instanceof Long || v instanceof Integer) {
            return ((Number) v).doubleValue();
        }
        throw new IllegalArgumentException(name + ": not a number: " + v.getClass().getName());
    }

    private static String string(GenericRecord r, String name) {
        Object v = field(r, name);
        if (v instanceof CharSequence s) {
            return s.toString();
        }
        throw new IllegalArgumentException(name + ": not a string: " + v.getClass().getName());
    }

    private static List<String> strings(GenericRecord r, String name) {
        Object v = field(r, name);
        if (!(v instanceof List<?> items)) {
            throw new IllegalArgumentException(name + ": not a list: " + v.getClass().getName());
        }
        List<String> out = new ArrayList<>(items.size());
        for (Object item : items) {
            if (!(item instanceof CharSequence s)) {
                throw new IllegalArgumentException(name + ": an item is not a string");
            }
            out.add(s.toString());
        }
        return out;
    }
}
