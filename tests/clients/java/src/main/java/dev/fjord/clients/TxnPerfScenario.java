package dev.fjord.clients;

import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Produce throughput with and without transactions, for bench/compare.py: {@code --records}
 * records of {@code --record-size} bytes to partition 0 of {@code --topic} (which must exist),
 * as fast as one Java producer sends them (the client's defaults: acks=all, idempotent, 16 KB
 * batches, linger.ms=5), in transactions of {@code --txn-records} records each (0: no
 * transactions, the reference). Reports {@code records_per_sec} over the whole run (the last
 * commit, or the last acknowledgement, included), after {@code --warmup-records} sent the same
 * way and not timed (the client's JIT, and a JVM broker's, warm up first).
 */
final class TxnPerfScenario {
    private TxnPerfScenario() {}

    static void run(Args a, Report r) throws Exception {
        String bs = a.bootstrap();
        String topic = a.required("topic");
        int records = a.getInt("records", 1_000_000);
        int size = a.getInt("record-size", 100);
        int txnRecords = a.getInt("txn-records", 0);
        int warmup = a.getInt("warmup-records", 0);
        Properties p = Clients.base(bs, "txn-perf");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        if (txnRecords > 0) {
            p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "txn-perf-" + txnRecords + "-" + System.nanoTime());
        }
        byte[] value = new byte[size];
        for (int i = 0; i < size; i++) {
            value[i] = (byte) ('a' + i % 26);
        }
        AtomicLong acked = new AtomicLong();
        AtomicReference<Exception> failed = new AtomicReference<>();
        long commits;
        long t0;
        long t1;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            if (txnRecords > 0) {
                producer.initTransactions();
            }
            // Metadata (and, with transactions, the coordinator) before the clock starts.
            producer.partitionsFor(topic);
            send(producer, topic, value, warmup, txnRecords, failed, new AtomicLong());
            t0 = System.nanoTime();
            commits = send(producer, topic, value, records, txnRecords, failed, acked);
            t1 = System.nanoTime();
        }
        double secs = (t1 - t0) / 1e9;
        r.put("records", records);
        r.put("record_size", size);
        r.put("txn_records", txnRecords);
        r.put("transactions", commits);
        r.put("acked", acked.get());
        r.put("warmup_records", warmup);
        r.put("seconds", secs);
        r.put("records_per_sec", records / secs);
        r.put("mb_per_sec", records * (double) size / 1e6 / secs);
        r.check(failed.get() == null, "a send failed: %s", Report.describe(failed.get()));
        r.check(acked.get() == records, "%d of %d records acknowledged", acked.get(), records);
    }

    /** Sends {@code records} (in transactions of {@code txnRecords}, 0: none) and flushes;
     * returns the transactions committed. */
    private static long send(KafkaProducer<byte[], byte[]> producer, String topic, byte[] value, int records,
            int txnRecords, AtomicReference<Exception> failed, AtomicLong acked) {
        long commits = 0;
        for (int i = 0; i < records; i++) {
            if (txnRecords > 0 && i % txnRecords == 0) {
                producer.beginTransaction();
            }
            producer.send(new ProducerRecord<>(topic, 0, null, value), (m, e) -> {
                if (e != null) {
                    failed.compareAndSet(null, e);
                } else {
                    acked.incrementAndGet();
                }
            });
            if (txnRecords > 0 && (i + 1) % txnRecords == 0) {
                producer.commitTransaction();
                commits++;
            }
        }
        if (txnRecords > 0 && records % txnRecords != 0) {
            producer.commitTransaction();
            commits++;
        }
        producer.flush();
        return commits;
    }
}
