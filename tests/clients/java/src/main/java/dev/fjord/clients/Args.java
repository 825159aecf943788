package dev.fjord.clients;

import java.util.HashMap;
import java.util.Map;

/** {@code --name value} options after the scenario name. */
final class Args {
    final String scenario;
    private final Map<String, String> opts = new HashMap<>();

    Args(String[] argv) {
        if (argv.length == 0 || argv[0].startsWith("--")) {
            throw new IllegalArgumentException("usage: SCENARIO --bootstrap HOST:PORT [--option value]...");
        }
        scenario = argv[0];
        for (int i = 1; i < argv.length; i++) {
            String a = argv[i];
            if (!a.startsWith("--") || i + 1 >= argv.length) {
                throw new IllegalArgumentException("expected --option value, got " + a);
            }
            opts.put(a.substring(2), argv[++i]);
        }
    }

    String bootstrap() {
        return required("bootstrap");
    }

    String required(String name) {
        String v = opts.get(name);
        if (v == null) {
            throw new IllegalArgumentException("missing --" + name);
        }
        return v;
    }

    String get(String name, String dflt) {
        return opts.getOrDefault(name, dflt);
    }

    int getInt(String name, int dflt) {
        String v = opts.get(name);
        return v == null ? dflt : Integer.parseInt(v);
    }
}
