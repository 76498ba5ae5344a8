package bench;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartition;

/**
 * The few admin calls bench/run needs, in one short-lived JVM each (the Kafka CLI tools
 * would be one JVM per topic):
 *
 * <pre>
 *   Admin [--brokers B] create PARTITIONS [key=value...] -- TOPIC...   (recreates them empty)
 *   Admin [--brokers B] delete REGEX                                  (every matching topic)
 *   Admin [--brokers B] delete-groups REGEX                           (every matching consumer group)
 *   Admin [--brokers B] offsets TOPIC                                 (partition=end offset lines)
 * </pre>
 */
public class Admin {
    public static void main(String[] argv) throws Exception {
        List<String> args = new ArrayList<>(List.of(argv));
        String brokers = "127.0.0.1:9092";
        if (args.size() >= 2 && args.get(0).equals("--brokers")) {
            brokers = args.get(1);
            args = args.subList(2, args.size());
        }
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        try (org.apache.kafka.clients.admin.Admin admin = org.apache.kafka.clients.admin.Admin.create(p)) {
            switch (args.get(0)) {
                case "create": {
                    int parts = Integer.parseInt(args.get(1));
                    Map<String, String> conf = new HashMap<>();
                    int i = 2;
                    for (; i < args.size() && !args.get(i).equals("--"); i++) {
                        String[] kv = args.get(i).split("=", 2);
                        conf.put(kv[0], kv[1]);
                    }
                    List<String> topics = args.subList(i + 1, args.size());
                    Set<String> existing = admin.listTopics().names().get();
                    List<String> old = topics.stream().filter(existing::contains).collect(Collectors.toList());
                    if (!old.isEmpty()) {
                        admin.deleteTopics(old).all().get();
                        waitGone(admin, old);
                    }
                    List<NewTopic> nts = new ArrayList<>();
                    for (String t : topics) {
                        nts.add(new NewTopic(t, parts, (short) 1).configs(conf));
                    }
                    for (int attempt = 0; ; attempt++) {
                        try {
                            admin.createTopics(nts).all().get();
                            break;
                        } catch (java.util.concurrent.ExecutionException e) {
                            // a just-deleted topic may still be being removed
                            if (attempt >= 50) {
                                throw e;
                            }
                            Thread.sleep(200);
                            Set<String> now = admin.listTopics().names().get();
                            nts.removeIf(nt -> now.contains(nt.name()) && !old.contains(nt.name()));
                        }
                    }
                    break;
                }
                case "delete": {
                    Pattern re = Pattern.compile(args.get(1));
                    List<String> del = admin.listTopics().names().get().stream()
                            .filter(t -> re.matcher(t).matches()).collect(Collectors.toList());
                    if (!del.isEmpty()) {
                        admin.deleteTopics(del).all().get();
                    }
                    System.out.println("deleted " + del.size());
                    break;
                }
                case "delete-groups": {
                    Pattern re = Pattern.compile(args.get(1));
                    List<String> del = admin.listGroups().all().get().stream()
                            .map(g -> g.groupId()).filter(g -> re.matcher(g).matches())
                            .collect(Collectors.toList());
                    int n = 0;
                    for (Map.Entry<String, org.apache.kafka.common.KafkaFuture<Void>> e
                            : admin.deleteConsumerGroups(del).deletedGroups().entrySet()) {
                        try {
                            e.getValue().get();
                            n++;
                        } catch (java.util.concurrent.ExecutionException ex) {
                            System.err.println("group " + e.getKey() + ": " + ex.getCause().getMessage());
                        }
                    }
                    System.out.println("deleted " + n);
                    break;
                }
                case "offsets": {
                    String t = args.get(1);
                    TopicDescription d = admin.describeTopics(List.of(t)).allTopicNames().get().get(t);
                    Map<TopicPartition, OffsetSpec> req = new HashMap<>();
                    d.partitions().forEach(pi -> req.put(new TopicPartition(t, pi.partition()), OffsetSpec.latest()));
                    Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> r = admin.listOffsets(req).all().get();
                    TreeMap<Integer, Long> out = new TreeMap<>();
                    r.forEach((tp, info) -> out.put(tp.partition(), info.offset()));
                    out.forEach((k, v) -> System.out.println(k + "=" + v));
                    break;
                }
                default:
                    throw new IllegalArgumentException("unknown command " + args.get(0));
            }
        }
    }

    static void waitGone(org.apache.kafka.clients.admin.Admin admin, List<String> topics) throws Exception {
        for (int i = 0; i < 100; i++) {
            Set<String> now = admin.listTopics().names().get();
            if (topics.stream().noneMatch(now::contains)) {
                return;
            }
            Thread.sleep(100);
        }
    }
}
