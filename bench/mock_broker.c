/*
 * mock_broker: librdkafka's in-memory mock cluster (rd_kafka_mock_cluster_new)
 * as a stand-alone process, the reference point for bench/compare.sh.
 *
 *   mock_broker TOPIC:PARTITIONS [TOPIC:PARTITIONS ...]
 *
 * Creates the topics (replication factor 1), prints the bootstrap address on
 * stdout, and serves until stdin closes or SIGTERM/SIGINT arrives.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include "rdkafka.h"
#include "rdkafka_mock.h"

static volatile sig_atomic_t run = 1;
static void stop(int sig) {
        (void)sig;
        run = 0;
}

int main(int argc, char **argv) {
        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_t *rk;
        rd_kafka_mock_cluster_t *mcluster;
        int i;

        rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "rd_kafka_new: %s\n", errstr);
                return 1;
        }
        mcluster = rd_kafka_mock_cluster_new(rk, 1);
        if (!mcluster) {
                fprintf(stderr, "rd_kafka_mock_cluster_new failed\n");
                return 1;
        }
        for (i = 1; i < argc; i++) {
                char topic[256];
                char *colon = strrchr(argv[i], ':');
                int parts = colon ? atoi(colon + 1) : 1;
                size_t len = colon ? (size_t)(colon - argv[i]) : strlen(argv[i]);
                if (len >= sizeof(topic))
                        len = sizeof(topic) - 1;
                memcpy(topic, argv[i], len);
                topic[len] = '\0';
                if (rd_kafka_mock_topic_create(mcluster, topic, parts, 1)) {
                        fprintf(stderr, "cannot create topic %s\n", topic);
                        return 1;
                }
        }
        printf("%s\n", rd_kafka_mock_cluster_bootstraps(mcluster));
        fflush(stdout);

        signal(SIGTERM, stop);
        signal(SIGINT, stop);
        signal(SIGPIPE, SIG_IGN);
        while (run) {
                char buf[64];
                /* stdin closing (the script exiting) stops us too. */
                fd_set rfds;
                struct timeval tv = {0, 200000};
                FD_ZERO(&rfds);
                FD_SET(0, &rfds);
                if (select(1, &rfds, NULL, NULL, &tv) > 0 &&
                    read(0, buf, sizeof(buf)) <= 0)
                        break;
        }
        rd_kafka_mock_cluster_destroy(mcluster);
        rd_kafka_destroy(rk);
        return 0;
}
