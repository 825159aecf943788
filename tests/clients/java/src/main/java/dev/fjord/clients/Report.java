package dev.fjord.clients;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;

/**
 * What a scenario found: result values (printed as one JSON object) and the failed checks. A
 * failed check does not stop the scenario, so one run shows every incompatibility.
 */
final class Report {
    final Map<String, Object> values = new LinkedHashMap<>();
    final List<String> failures = new ArrayList<>();

    void put(String key, Object value) {
        values.put(key, value);
    }

    /** Records a failure unless {@code ok}; returns {@code ok}. */
    boolean check(boolean ok, String format, Object... args) {
        if (!ok) {
            failures.add(String.format(format, args));
        }
        return ok;
    }

    void fail(String format, Object... args) {
        failures.add(String.format(format, args));
    }

    /** Runs one step; an exception becomes a failure named after the step. */
    <T> T step(String name, Callable<T> body) {
        try {
            return body.call();
        } catch (Throwable t) {
            failures.add(name + ": " + describe(t));
            return null;
        }
    }

    void step(String name, ThrowingRunnable body) {
        step(name, () -> {
            body.run();
            return null;
        });
    }

    interface ThrowingRunnable {
        void run() throws Exception;
    }

    /** The exception behind ExecutionException wrappers, as "Class: message". */
    static String describe(Throwable t) {
        if (t == null) {
            return "no exception";
        }
        Throwable c = unwrap(t);
        String msg = c.getMessage();
        return c.getClass().getSimpleName() + (msg == null ? "" : ": " + msg.replace('\n', ' '));
    }

    static Throwable unwrap(Throwable t) {
        Throwable c = t;
        while ((c instanceof ExecutionException || c instanceof java.util.concurrent.CompletionException)
                && c.getCause() != null) {
            c = c.getCause();
        }
        return c;
    }
}
