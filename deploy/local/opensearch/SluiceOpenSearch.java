// A single-node OpenSearch for the local stack, started from Maven Central jars.
//
// No distribution tarball is reachable here, so the node is embedded: the protected
// Node constructor takes the plugins that a distribution would load from its plugins/
// directory (HTTP + transport, common analysis) as classpath plugins.
//
// Usage: java -cp <classpath> SluiceOpenSearch <home-dir> <http-port> <transport-port>

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.transport.Netty4Plugin;

public final class SluiceOpenSearch extends Node {

    private SluiceOpenSearch(Environment environment) {
        super(environment, List.of(Netty4Plugin.class, CommonAnalysisPlugin.class), true);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: SluiceOpenSearch <home-dir> <http-port> <transport-port>");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        Path config = home.resolve("config");
        Files.createDirectories(config);
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        Files.createDirectories(home.resolve("plugins"));

        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "sluice-local")
            .put("node.name", "sluice-local-1")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", args[1])
            .put("transport.port", args[2])
            // The stack shares a developer's disk: never go read-only on a full-ish disk.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();

        Environment environment =
            InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> "sluice-local-1");
        SluiceOpenSearch node = new SluiceOpenSearch(environment);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception e) {
                System.err.println("opensearch: close failed: " + e);
            } finally {
                stopped.countDown();
            }
        }, "sluice-opensearch-shutdown"));
        node.start();
        System.out.println("SluiceOpenSearch started on 127.0.0.1:" + args[1]);
        stopped.await();
    }
}
