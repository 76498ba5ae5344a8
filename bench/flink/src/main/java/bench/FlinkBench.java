package bench;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.PipelineOptions;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchemaBuilder;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.KafkaSourceBuilder;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.formats.json.JsonDeserializationSchema;
import org.apache.flink.formats.json.JsonSerializationSchema;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.EventTimeSessionWindows;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The benchmark jobs J1-J3 as a Flink user writes them: KafkaSource (bounded at the offsets
 * that are the latest when the job starts, so the watermark goes to +inf at the end and
 * every window fires), bounded-out-of-orderness watermarks from the event's `ts`, keyBy
 * user, event-time windows with allowed lateness and a late side output, an incremental
 * AggregateFunction plus a ProcessWindowFunction for the window bounds, JSON POJOs
 * (flink-json) in and out, KafkaSink (at least once). One JVM, local MiniCluster.
 *
 * <p>{@code --unbounded true} (bench/run's latency mode): no {@code setBounded}, the source
 * reads until the process is stopped (SIGTERM: the JVM's shutdown hooks stop the
 * MiniCluster; the windows still open never fire).
 *
 * <p>Usage: FlinkBench --job j1|j2|j3 --input TOPIC --output TOPIC --late TOPIC
 * [--brokers 127.0.0.1:9092] [--group ID] [--parallelism 2] [--unbounded true]
 * [--checkpoint-interval MS --checkpoint-dir file:///DIR] [--rest-port PORT] (--job ck: bench/ckpt)
 */
public class FlinkBench {

    /** The input event: only the fields the jobs use (others are ignored). */
    public static class Event {
        public long user_id;
        public double latency_ms;
        public double amount;
        public long ts;

        public Event() {}
    }

    /** Key and window bounds: the message key of every result, as streamc writes it. */
    public static class Row {
        public long user_id;
        public long window_start;
        public long window_end;
    }

    public static class J1Out extends Row {
        public long cnt;
        public double sum_amount;
        public double avg_latency_ms;
    }

    public static class J2Out extends Row {
        public long cnt;
        public double max_latency_ms;
    }

    public static class J3Out extends Row {
        public long cnt;
        public double sum_amount;
    }

    /** Accumulator of all three jobs (count, sum of amount, sum and max of latency). */
    public static class Acc {
        public long cnt;
        public double sumAmount;
        public double sumLatency;
        public double maxLatency = Double.NEGATIVE_INFINITY;

        public Acc() {}
    }

    public static class J1Agg implements AggregateFunction<Event, Acc, Acc> {
        public Acc createAccumulator() { return new Acc(); }
        public Acc add(Event e, Acc a) { a.cnt++; a.sumAmount += e.amount; a.sumLatency += e.latency_ms; return a; }
        public Acc getResult(Acc a) { return a; }
        public Acc merge(Acc a, Acc b) { a.cnt += b.cnt; a.sumAmount += b.sumAmount; a.sumLatency += b.sumLatency; return a; }
    }

    public static class J2Agg implements AggregateFunction<Event, Acc, Acc> {
        public Acc createAccumulator() { return new Acc(); }
        public Acc add(Event e, Acc a) { a.cnt++; a.maxLatency = Math.max(a.maxLatency, e.latency_ms); return a; }
        public Acc getResult(Acc a) { return a; }
        public Acc merge(Acc a, Acc b) { a.cnt += b.cnt; a.maxLatency = Math.max(a.maxLatency, b.maxLatency); return a; }
    }

    public static class J3Agg implements AggregateFunction<Event, Acc, Acc> {
        public Acc createAccumulator() { return new Acc(); }
        public Acc add(Event e, Acc a) { a.cnt++; a.sumAmount += e.amount; return a; }
        public Acc getResult(Acc a) { return a; }
        // Session merges: a's events precede b's in the merged window's order.
        public Acc merge(Acc a, Acc b) { a.cnt += b.cnt; a.sumAmount += b.sumAmount; return a; }
    }

    public static class J1Fn extends ProcessWindowFunction<Acc, J1Out, Long, TimeWindow> {
        public void process(Long key, Context ctx, Iterable<Acc> in, Collector<J1Out> out) {
            Acc a = in.iterator().next();
            J1Out o = new J1Out();
            o.user_id = key; o.window_start = ctx.window().getStart(); o.window_end = ctx.window().getEnd();
            o.cnt = a.cnt; o.sum_amount = a.sumAmount; o.avg_latency_ms = a.sumLatency / a.cnt;
            out.collect(o);
        }
    }

    public static class J2Fn extends ProcessWindowFunction<Acc, J2Out, Long, TimeWindow> {
        public void process(Long key, Context ctx, Iterable<Acc> in, Collector<J2Out> out) {
            Acc a = in.iterator().next();
            J2Out o = new J2Out();
            o.user_id = key; o.window_start = ctx.window().getStart(); o.window_end = ctx.window().getEnd();
            o.cnt = a.cnt; o.max_latency_ms = a.maxLatency;
            out.collect(o);
        }
    }

    public static class J3Fn extends ProcessWindowFunction<Acc, J3Out, Long, TimeWindow> {
        public void process(Long key, Context ctx, Iterable<Acc> in, Collector<J3Out> out) {
            Acc a = in.iterator().next();
            J3Out o = new J3Out();
            o.user_id = key; o.window_start = ctx.window().getStart(); o.window_end = ctx.window().getEnd();
            o.cnt = a.cnt; o.sum_amount = a.sumAmount;
            out.collect(o);
        }
    }

    /** flink-json's POJO deserializer; notes when this subtask sees its first record. */
    public static class EventSchema extends JsonDeserializationSchema<Event> {
        private transient boolean seen;

        public EventSchema() {
            super(Event.class, () -> new ObjectMapper()
                    .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false));
        }

        @Override
        public Event deserialize(byte[] message) throws java.io.IOException {
            if (!seen) {
                seen = true;
                System.err.println("FIRST_RECORD " + System.currentTimeMillis());
            }
            return super.deserialize(message);
        }
    }

    /** The message key: {"user_id":..,"window_start":..,"window_end":..}, like streamc's. */
    public static class KeySchema<T extends Row> implements SerializationSchema<T> {
        public byte[] serialize(T r) {
            return ("{\"user_id\":" + r.user_id + ",\"window_start\":" + r.window_start
                    + ",\"window_end\":" + r.window_end + "}").getBytes(StandardCharsets.UTF_8);
        }
    }

    static <T> KafkaSink<T> sink(String brokers, String topic, SerializationSchema<T> key) {
        return sink(brokers, topic, key, null);
    }

    /** With a transactional id prefix: exactly once (a Kafka transaction per checkpoint). */
    static <T> KafkaSink<T> sink(String brokers, String topic, SerializationSchema<T> key, String txnPrefix) {
        KafkaRecordSerializationSchemaBuilder<T> b =
                KafkaRecordSerializationSchema.<T>builder()
                        .setTopic(topic)
                        .setValueSerializationSchema(new JsonSerializationSchema<T>());
        if (key != null) {
            b = b.setKeySerializationSchema(key);
        }
        if (txnPrefix != null) {
            Properties p = new Properties();
            // under the broker's transaction.max.timeout.ms (15 min); Flink's default is 1 h
            p.setProperty("transaction.timeout.ms", "600000");
            return KafkaSink.<T>builder()
                    .setBootstrapServers(brokers)
                    .setRecordSerializer(b.build())
                    .setDeliveryGuarantee(DeliveryGuarantee.EXACTLY_ONCE)
                    .setTransactionalIdPrefix(txnPrefix)
                    .setKafkaProducerConfig(p)
                    .build();
        }
        return KafkaSink.<T>builder()
                .setBootstrapServers(brokers)
                .setRecordSerializer(b.build())
                .setDeliveryGuarantee(DeliveryGuarantee.AT_LEAST_ONCE)
                .build();
    }

    static ConfigOption<String> str(String key) {
        return ConfigOptions.key(key).stringType().noDefaultValue();
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            a.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        String job = a.getOrDefault("job", "j1");
        String brokers = a.getOrDefault("brokers", "127.0.0.1:9092");
        String input = a.getOrDefault("input", "bench-input");
        String output = a.getOrDefault("output", "bench-flink-" + job);
        String lateTopic = a.getOrDefault("late", output + "-late");
        String group = a.getOrDefault("group", "bench-flink-" + job + "-" + System.currentTimeMillis());
        int parallelism = Integer.parseInt(a.getOrDefault("parallelism", "2"));
        boolean unbounded = Boolean.parseBoolean(a.getOrDefault("unbounded", "false"));

        // --checkpoint-interval MS (bench/ckpt/run): exactly-once checkpoints every MS,
        // HashMapStateBackend, filesystem checkpoint storage in --checkpoint-dir, and the
        // KafkaSink exactly once (transactions committed on checkpoints).
        long ckInterval = Long.parseLong(a.getOrDefault("checkpoint-interval", "0"));
        Configuration conf = new Configuration();
        conf.set(PipelineOptions.OBJECT_REUSE, true);
        String txn = null;
        if (ckInterval > 0) {
            conf.set(str("execution.checkpointing.interval"), ckInterval + " ms");
            conf.set(str("execution.checkpointing.mode"), "EXACTLY_ONCE");
            conf.set(str("state.backend.type"), "hashmap");
            conf.set(str("execution.checkpointing.storage"), "filesystem");
            conf.set(str("execution.checkpointing.dir"), a.get("checkpoint-dir"));
            conf.set(str("execution.checkpointing.num-retained"), "1");
            txn = "bench-flink-" + job + "-" + System.currentTimeMillis();
        }
        if (a.containsKey("rest-port")) {
            conf.set(str("rest.port"), a.get("rest-port"));
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);

        Properties props = new Properties();
        // the topic's partitions are fixed during a run: no discovery
        props.setProperty("partition.discovery.interval.ms", "-1");
        KafkaSourceBuilder<Event> sb = KafkaSource.<Event>builder()
                .setBootstrapServers(brokers)
                .setTopics(input)
                .setGroupId(group)
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setValueOnlyDeserializer(new EventSchema())
                .setProperties(props);
        if (!unbounded) {
            sb = sb.setBounded(OffsetsInitializer.latest());
        }
        KafkaSource<Event> source = sb.build();
        WatermarkStrategy<Event> wm = WatermarkStrategy
                .<Event>forBoundedOutOfOrderness(Duration.ofSeconds(5))
                .withTimestampAssigner((e, t) -> e.ts);
        DataStream<Event> events = env.fromSource(source, wm, "events");
        OutputTag<Event> late = new OutputTag<Event>("late") {};

        SingleOutputStreamOperator<? extends Row> results;
        switch (job) {
            case "j1": {
                SingleOutputStreamOperator<J1Out> r = events
                        .keyBy(e -> e.user_id)
                        .window(TumblingEventTimeWindows.of(Duration.ofMinutes(1)))
                        .allowedLateness(Duration.ofSeconds(10))
                        .sideOutputLateData(late)
                        .aggregate(new J1Agg(), new J1Fn());
                r.sinkTo(sink(brokers, output, new KeySchema<J1Out>())).name("results");
                results = r;
                break;
            }
            case "j2": {
                SingleOutputStreamOperator<J2Out> r = events
                        .keyBy(e -> e.user_id)
                        .window(SlidingEventTimeWindows.of(Duration.ofMinutes(5), Duration.ofMinutes(1)))
                        .sideOutputLateData(late)
                        .aggregate(new J2Agg(), new J2Fn());
                r.sinkTo(sink(brokers, output, new KeySchema<J2Out>())).name("results");
                results = r;
                break;
            }
            case "j3": {
                SingleOutputStreamOperator<J3Out> r = events
                        .keyBy(e -> e.user_id)
                        .window(EventTimeSessionWindows.withGap(Duration.ofSeconds(30)))
                        .sideOutputLateData(late)
                        .aggregate(new J3Agg(), new J3Fn());
                r.sinkTo(sink(brokers, output, new KeySchema<J3Out>())).name("results");
                results = r;
                break;
            }
            case "ck": {
                // bench/ckpt: one tumbling 10-minute window per user (the whole input), count
                // and sum(amount): ~1M live keys in state
                SingleOutputStreamOperator<J3Out> r = events
                        .keyBy(e -> e.user_id)
                        .window(TumblingEventTimeWindows.of(Duration.ofMinutes(10)))
                        .sideOutputLateData(late)
                        .aggregate(new J3Agg(), new J3Fn());
                r.sinkTo(sink(brokers, output, new KeySchema<J3Out>(), txn)).name("results");
                results = r;
                break;
            }
            default:
                throw new IllegalArgumentException("--job must be j1, j2, j3 or ck");
        }
        results.getSideOutput(late)
                .sinkTo(sink(brokers, lateTopic, null, txn == null ? null : txn + "-late")).name("late");

        long t0 = System.currentTimeMillis();
        env.execute("bench-" + job);
        System.err.println("DONE " + System.currentTimeMillis() + " ms=" + (System.currentTimeMillis() - t0));
        System.exit(0);
    }
}
