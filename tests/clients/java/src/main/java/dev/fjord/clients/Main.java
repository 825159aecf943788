package dev.fjord.clients;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * Kafka Java client scenarios against a Fjord broker (driven by
 * crates/fjord/tests/java_client.rs).
 *
 * <p>Usage: {@code java -jar fjord-java-clients.jar SCENARIO --bootstrap HOST:PORT [--option
 * value]...}. Prints one JSON line on stdout with the scenario's results and a {@code failures}
 * list; exits 1 (after a one-line reason on stderr) if any check failed, 2 on bad usage, 3 when
 * the scenario ran past {@code --timeout-sec}.
 */
public final class Main {
    /** Where this JVM's client logging goes (slf4j-simple). */
    static Path logFile;

    private Main() {}

    public static void main(String[] argv) throws Exception {
        Args args;
        try {
            args = new Args(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("fjord-java-clients: " + e.getMessage());
            System.err.println("scenarios: producer, fetch-sessions, groups, admin, failover, rack-producer, rack-groups, transactions, streams-eos, txn-perf");
            System.exit(2);
            return;
        }
        setUpLogging(args.scenario);
        int timeoutSec = args.getInt("timeout-sec", 170);
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(timeoutSec * 1000L);
            } catch (InterruptedException e) {
                return;
            }
            System.err.print(logTail(60));
            System.err.println("FAILED " + args.scenario + ": still running after " + timeoutSec + " s");
            System.err.flush();
            Runtime.getRuntime().halt(3);
        }, "watchdog");
        watchdog.setDaemon(true);
        watchdog.start();

        long t0 = System.nanoTime();
        Report r = new Report();
        r.put("scenario", args.scenario);
        r.put("kafka_clients_version", kafkaVersion());
        try {
            switch (args.scenario) {
                case "producer" -> ProducerScenario.run(args, r);
                case "fetch-sessions" -> FetchSessionsScenario.run(args, r);
                case "groups" -> GroupsScenario.run(args, r);
                case "admin" -> AdminScenario.run(args, r);
                case "failover" -> FailoverScenario.run(args, r);
                case "rack-producer" -> RackProducerScenario.run(args, r);
                case "rack-groups" -> RackGroupsScenario.run(args, r);
                case "transactions" -> TransactionsScenario.run(args, r);
                case "streams-eos" -> StreamsEosScenario.run(args, r);
                case "txn-perf" -> TxnPerfScenario.run(args, r);
                default -> {
                    System.err.println("fjord-java-clients: unknown scenario " + args.scenario);
                    System.exit(2);
                }
            }
        } catch (Throwable t) {
            r.fail("aborted: %s", Report.describe(t));
        }
        r.put("elapsed_ms", (System.nanoTime() - t0) / 1_000_000);
        r.put("failures", r.failures);
        r.put("ok", r.failures.isEmpty());
        System.out.println(Json.write(r.values));
        System.out.flush();
        if (!r.failures.isEmpty()) {
            System.err.print(logTail(80));
            String more = r.failures.size() > 1 ? " (+" + (r.failures.size() - 1) + " more)" : "";
            System.err.println("FAILED " + args.scenario + ": " + r.failures.get(0) + more);
            System.err.flush();
            cleanUpLog();
            System.exit(1);
        }
        cleanUpLog();
        System.exit(0);
    }

    /** Client logs go to a file: WARN and up, plus per-scenario DEBUG loggers. */
    private static void setUpLogging(String scenario) throws IOException {
        logFile = Files.createTempFile("fjord-java-" + scenario + "-", ".log");
        System.setProperty("org.slf4j.simpleLogger.logFile", logFile.toString());
        if (scenario.equals("fetch-sessions")) {
            // The consumer logs each fetch it builds (full or incremental) and each session
            // error at DEBUG/INFO here; the scenario counts them.
            System.setProperty("org.slf4j.simpleLogger.log.org.apache.kafka.clients.FetchSessionHandler", "debug");
        }
    }

    /** The kafka-clients version on the class path (from the jar's own version file). */
    static String kafkaVersion() {
        try (var in = org.apache.kafka.clients.producer.KafkaProducer.class
                .getResourceAsStream("/kafka/kafka-version.properties")) {
            java.util.Properties p = new java.util.Properties();
            if (in != null) {
                p.load(in);
            }
            return p.getProperty("version", "unknown");
        } catch (IOException e) {
            return "unknown";
        }
    }

    static List<String> logLines() {
        try {
            return Files.readAllLines(logFile, StandardCharsets.UTF_8);
        } catch (IOException e) {
            return List.of();
        }
    }

    private static String logTail(int n) {
        List<String> lines = logLines();
        if (lines.isEmpty()) {
            return "";
        }
        StringBuilder sb = new StringBuilder("--- client log (last " + n + " lines) ---\n");
        for (String l : lines.subList(Math.max(0, lines.size() - n), lines.size())) {
            sb.append(l.length() > 400 ? l.substring(0, 400) + "..." : l).append('\n');
        }
        return sb.toString();
    }

    private static void cleanUpLog() {
        if (System.getenv("FJORD_JAVA_KEEP_LOG") == null) {
            try {
                Files.deleteIfExists(logFile);
            } catch (IOException e) {
                // a leftover temp file is harmless
            }
        } else {
            System.err.println("client log kept at " + logFile);
        }
    }

    static Map<String, Object> map(Object... kv) {
        Map<String, Object> m = new java.util.LinkedHashMap<>();
        for (int i = 0; i + 1 < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }
}
