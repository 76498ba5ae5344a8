package bench;

import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.EmitStrategy;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.TimestampExtractor;
import org.apache.kafka.streams.state.SessionStore;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.streams.state.WindowStore;
import org.apache.kafka.common.utils.Bytes;


/**
 * The benchmark jobs J1-J3 as a Kafka Streams user writes them: the input topic is keyed
 * by user id, so groupByKey needs no repartition; event time from the JSON `ts` (a
 * TimestampExtractor over the deserialized POJO); windowedBy with a grace period; an
 * aggregate with a small binary serde for the accumulator; default stores (RocksDB, with
 * the record cache and changelog topics); results as JSON strings to the output topic.
 *
 * <p>Semantics mapping (bench/README.md): Kafka Streams has no watermark; a window closes
 * when the partition's stream time (the largest event time seen) passes end + grace. So
 * grace = Flink's out-of-orderness bound + allowed lateness (J1 15 s, J2 5 s, J3 5 s).
 * --emit final (default) uses EmitStrategy.onWindowClose(): one final row per window,
 * like Flink and streamc; --emit suppress uses suppress(untilWindowCloses) instead (the
 * older idiom; bench/run uses it for J3, where onWindowClose loses sessions when stream
 * time jumps: their store segments expire before they are emitted); --emit update is
 * the DSL default (a row per cache flush, tombstones for merged sessions).
 * Session windows are [first, last] event times here, not [first, last + gap) (the
 * checker normalizes).
 *
 * <p>--stores rocksdb (default) keeps the DSL's default stores: RocksDB with the record
 * cache and changelog topics. --stores memory uses in-memory window/session stores with
 * their changelogs disabled (and the suppress buffer's too), the durability of streamc's
 * and Flink's runs in bench/run (state lives in the process only); --cache-bytes sets
 * statestore.cache.max.bytes (default 10 MB) for either.
 *
 * <p>No end of input: it runs until SIGTERM. Every 200 ms it prints
 * "PROGRESS epoch_ms lag=L parts=K processed=R" (the consumers' records-lag summed over
 * the K input partitions they report, and the records the stream threads processed) so
 * bench/run can stop it once everything is processed and the output stops growing.
 *
 * <p>Usage: KStreamsBench --job j1|j2|j3 --input TOPIC --output TOPIC --app-id ID
 * --state-dir DIR [--brokers ..] [--threads 2] [--emit final|suppress|update]
 * [--commit-interval-ms MS] [--stores rocksdb|memory] [--cache-bytes N]
 */
public class KStreamsBench {

    public static class Event {
        public long user_id;
        public double latency_ms;
        public double amount;
        public long ts;
    }

    public static class J1Out {
        public long user_id, window_start, window_end, cnt;
        public double sum_amount, avg_latency_ms;
    }

    public static class J2Out {
        public long user_id, window_start, window_end, cnt;
        public double max_latency_ms;
    }

    public static class J3Out {
        public long user_id, window_start, window_end, cnt;
        public double sum_amount;
    }

    public static class Retracted {
        public long user_id, window_start, window_end;
        public boolean retracted = true;
    }

    /** count, sum of amount, sum of latency, max of latency. */
    public static final class Acc {
        long cnt;
        double sumAmount;
        double sumLatency;
        double maxLatency = Double.NEGATIVE_INFINITY;
    }

    static final ObjectMapper MAPPER = new ObjectMapper()
            .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);

    static volatile boolean seen;

    static final class EventDeserializer implements Deserializer<Event> {
        public Event deserialize(String topic, byte[] data) {
            if (data == null) {
                return null;
            }
            try {
                return MAPPER.readValue(data, Event.class);
            } catch (java.io.IOException e) {
                throw new org.apache.kafka.common.errors.SerializationException(e);
            }
        }
    }

    static final class EventSerializer implements Serializer<Event> {
        public byte[] serialize(String topic, Event e) {
            try {
                return e == null ? null : MAPPER.writeValueAsBytes(e);
            } catch (java.io.IOException ex) {
                throw new org.apache.kafka.common.errors.SerializationException(ex);
            }
        }
    }

    static final class AccSerializer implements Serializer<Acc> {
        public byte[] serialize(String topic, Acc a) {
            if (a == null) {
                return null;
            }
            return ByteBuffer.allocate(32).putLong(a.cnt).putDouble(a.sumAmount)
                    .putDouble(a.sumLatency).putDouble(a.maxLatency).array();
        }
    }

    static final class AccDeserializer implements Deserializer<Acc> {
        public Acc deserialize(String topic, byte[] data) {
            if (data == null) {
                return null;
            }
            ByteBuffer b = ByteBuffer.wrap(data);
            Acc a = new Acc();
            a.cnt = b.getLong();
            a.sumAmount = b.getDouble();
            a.sumLatency = b.getDouble();
            a.maxLatency = b.getDouble();
            return a;
        }
    }

    /** Event time from the deserialized event's `ts`. */
    public static final class EventTime implements TimestampExtractor {
        public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
            if (!seen) {
                seen = true;
                System.err.println("FIRST_RECORD " + System.currentTimeMillis());
            }
            Object v = record.value();
            return v instanceof Event ? ((Event) v).ts : partitionTime;
        }
    }

    static String json(Object o) {
        try {
            return MAPPER.writeValueAsString(o);
        } catch (java.io.IOException e) {
            throw new RuntimeException(e);
        }
    }

    static String keyJson(long user, long start, long end) {
        return "{\"user_id\":" + user + ",\"window_start\":" + start + ",\"window_end\":" + end + "}";
    }

    /** The DSL's default window store, or an in-memory one without a changelog. */
    static Materialized<String, Acc, WindowStore<Bytes, byte[]>> windowStore(
            boolean memory, String name, Duration size, Duration grace, Serde<Acc> accSerde) {
        if (!memory) {
            return Materialized.with(Serdes.String(), accSerde);
        }
        return Materialized.<String, Acc>as(Stores.inMemoryWindowStore(name, size.plus(grace), size, false))
                .withKeySerde(Serdes.String()).withValueSerde(accSerde).withLoggingDisabled();
    }

    /** The DSL's default session store, or an in-memory one without a changelog. */
    static Materialized<String, Acc, SessionStore<Bytes, byte[]>> sessionStore(
            boolean memory, String name, Duration retention, Serde<Acc> accSerde) {
        if (!memory) {
            return Materialized.with(Serdes.String(), accSerde);
        }
        return Materialized.<String, Acc>as(Stores.inMemorySessionStore(name, retention))
                .withKeySerde(Serdes.String()).withValueSerde(accSerde).withLoggingDisabled();
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            a.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        String job = a.getOrDefault("job", "j1");
        String input = a.getOrDefault("input", "bench-input");
        String output = a.getOrDefault("output", "bench-kstreams-" + job);
        String emitMode = a.getOrDefault("emit", "final");
        boolean suppress = emitMode.equals("suppress");
        boolean fin = emitMode.equals("final");
        EmitStrategy emit = fin ? EmitStrategy.onWindowClose() : EmitStrategy.onWindowUpdate();
        boolean memory = a.getOrDefault("stores", "rocksdb").equals("memory");
        if (!memory && !a.getOrDefault("stores", "rocksdb").equals("rocksdb")) {
            throw new IllegalArgumentException("--stores must be rocksdb or memory");
        }
        Suppressed.StrictBufferConfig buffer = memory
                ? Suppressed.BufferConfig.unbounded().withLoggingDisabled()
                : Suppressed.BufferConfig.unbounded();

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG,
                a.getOrDefault("app-id", "bench-kstreams-" + job + "-" + System.currentTimeMillis()));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.getOrDefault("brokers", "127.0.0.1:9092"));
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(a.getOrDefault("threads", "2")));
        p.put(StreamsConfig.STATE_DIR_CONFIG, a.getOrDefault("state-dir", "/tmp/bench-kstreams-state"));
        p.put("auto.offset.reset", "earliest");
        if (a.containsKey("cache-bytes")) {
            p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, Long.parseLong(a.get("cache-bytes")));
        }
        if (a.containsKey("commit-interval-ms")) {
            // with --emit update or suppress, results leave the record cache only on a
            // commit (default every 30 s): bench/run passes 1000 so they arrive promptly
            p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(a.get("commit-interval-ms")));
        }
        if (fin) {
            // EmitStrategy.onWindowClose() checks for closed windows on a record only if
            // 1 s of wall clock has passed since the last check (an internal setting). The
            // end-of-input sentinel is the last record of its partition: with the
            // throttle, the final windows would wait for a record that never comes. With
            // a continuous input the throttle only delays results by up to 1 s.
            p.put(StreamsConfig.InternalConfig.EMIT_INTERVAL_MS_KSTREAMS_WINDOWED_AGGREGATION, 0L);
        }

        Serde<Event> eventSerde = Serdes.serdeFrom(new EventSerializer(), new EventDeserializer());
        Serde<Acc> accSerde = Serdes.serdeFrom(new AccSerializer(), new AccDeserializer());
        Produced<String, String> produced = Produced.with(Serdes.String(), Serdes.String());

        StreamsBuilder b = new StreamsBuilder();
        KStream<String, Event> events = b.stream(input,
                Consumed.with(Serdes.String(), eventSerde).withTimestampExtractor(new EventTime()));
        KGroupedStream<String, Event> byUser = events.groupByKey(Grouped.with(Serdes.String(), eventSerde));

        switch (job) {
            case "j1": {
                // allowed lateness 10 s + out-of-orderness bound 5 s
                KTable<Windowed<String>, Acc> t = byUser
                        .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(1), Duration.ofSeconds(15)))
                        .emitStrategy(emit)
                        .aggregate(Acc::new, (k, e, acc) -> {
                            acc.cnt++;
                            acc.sumAmount += e.amount;
                            acc.sumLatency += e.latency_ms;
                            return acc;
                        }, windowStore(memory, "j1-agg", Duration.ofMinutes(1), Duration.ofSeconds(15), accSerde));
                if (suppress) {
                    t = t.suppress(Suppressed.untilWindowCloses(buffer));
                }
                t.toStream().map((w, acc) -> {
                    long user = Long.parseLong(w.key());
                    long s = w.window().start(), en = w.window().end();
                    J1Out o = new J1Out();
                    o.user_id = user; o.window_start = s; o.window_end = en;
                    o.cnt = acc.cnt; o.sum_amount = acc.sumAmount; o.avg_latency_ms = acc.sumLatency / acc.cnt;
                    return KeyValue.pair(keyJson(user, s, en), json(o));
                }).to(output, produced);
                break;
            }
            case "j2": {
                KTable<Windowed<String>, Acc> t = byUser
                        .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(5), Duration.ofSeconds(5))
                                .advanceBy(Duration.ofMinutes(1)))
                        .emitStrategy(emit)
                        .aggregate(Acc::new, (k, e, acc) -> {
                            acc.cnt++;
                            acc.maxLatency = Math.max(acc.maxLatency, e.latency_ms);
                            return acc;
                        }, windowStore(memory, "j2-agg", Duration.ofMinutes(5), Duration.ofSeconds(5), accSerde));
                if (suppress) {
                    t = t.suppress(Suppressed.untilWindowCloses(buffer));
                }
                t.toStream().map((w, acc) -> {
                    long user = Long.parseLong(w.key());
                    long s = w.window().start(), en = w.window().end();
                    J2Out o = new J2Out();
                    o.user_id = user; o.window_start = s; o.window_end = en;
                    o.cnt = acc.cnt; o.max_latency_ms = acc.maxLatency;
                    return KeyValue.pair(keyJson(user, s, en), json(o));
                }).to(output, produced);
                break;
            }
            case "j3": {
                KTable<Windowed<String>, Acc> t = byUser
                        .windowedBy(SessionWindows.ofInactivityGapAndGrace(Duration.ofSeconds(30), Duration.ofSeconds(5)))
                        .emitStrategy(emit)
                        .aggregate(Acc::new, (k, e, acc) -> {
                            acc.cnt++;
                            acc.sumAmount += e.amount;
                            return acc;
                        }, (k, x, y) -> {
                            Acc m = new Acc();
                            m.cnt = x.cnt + y.cnt;
                            m.sumAmount = x.sumAmount + y.sumAmount;
                            return m;
                        }, sessionStore(memory, "j3-agg", Duration.ofSeconds(35), accSerde));
                if (suppress) {
                    t = t.suppress(Suppressed.untilWindowCloses(buffer));
                }
                t.toStream().map((w, acc) -> {
                    long user = Long.parseLong(w.key());
                    long s = w.window().start(), en = w.window().end();
                    if (acc == null) { // a session merged into another (update mode)
                        Retracted r = new Retracted();
                        r.user_id = user; r.window_start = s; r.window_end = en;
                        return KeyValue.pair(keyJson(user, s, en), json(r));
                    }
                    J3Out o = new J3Out();
                    o.user_id = user; o.window_start = s; o.window_end = en;
                    o.cnt = acc.cnt; o.sum_amount = acc.sumAmount;
                    return KeyValue.pair(keyJson(user, s, en), json(o));
                }).to(output, produced);
                break;
            }
            default:
                throw new IllegalArgumentException("--job must be j1, j2 or j3");
        }

        KafkaStreams streams = new KafkaStreams(b.build(), p);
        CountDownLatch done = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(20));
            done.countDown();
        }));
        streams.start();

        Thread progress = new Thread(() -> {
            while (done.getCount() > 0) {
                double lag = 0;
                int parts = 0;
                double processed = 0;
                for (Map.Entry<MetricName, ? extends Metric> m : streams.metrics().entrySet()) {
                    MetricName n = m.getKey();
                    if (n.name().equals("process-total") && n.group().equals("stream-thread-metrics")) {
                        Object v = m.getValue().metricValue();
                        if (v instanceof Double) {
                            processed += (Double) v;
                        }
                    }
                    if (n.name().equals("records-lag") && input.equals(n.tags().get("topic"))
                            && !n.tags().getOrDefault("client-id", "").contains("restore")) {
                        Object v = m.getValue().metricValue();
                        if (v instanceof Double && !((Double) v).isNaN()) {
                            lag += (Double) v;
                            parts++;
                        }
                    }
                }
                System.err.println("PROGRESS " + System.currentTimeMillis() + " lag=" + (long) lag
                        + " parts=" + parts + " processed=" + (long) processed + " state=" + streams.state());
                try {
                    Thread.sleep(200);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }, "progress");
        progress.setDaemon(true);
        progress.start();
        done.await();
    }
}
