# Sourced by the benchmark scripts (bench/run, bench/cdc): resolves Apache Kafka Connect
# (bench/kafka-connect/pom.xml) from Maven Central into ~/.m2 and sets KC_VERSION,
# KC_CLASSPATH_FILE (the worker's classpath) and KC_PLUGINS (a plugin.path directory holding
# connect-file). Expects $state (a scratch directory) and the repository root as the
# working directory.
resolve_kafka_connect() {
  local pom=bench/kafka-connect/pom.xml sum
  KC_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
  sum=$(sha256sum "$pom" | cut -c1-16)
  KC_CLASSPATH_FILE="$state/classpath-$sum.txt"
  if [[ ! -s $KC_CLASSPATH_FILE ]]; then
    echo "bench: resolving Kafka Connect $KC_VERSION from Maven Central"
    mvn -q -B -f "$pom" dependency:build-classpath -Dmdep.outputFile="$KC_CLASSPATH_FILE" >"$state/mvn.log" 2>&1 ||
      { echo "bench: Maven failed; see $state/mvn.log" >&2; exit 1; }
  fi
  KC_PLUGINS="$state/plugins-$KC_VERSION"
  if [[ ! -s $KC_PLUGINS/connect-file/connect-file-$KC_VERSION.jar ]]; then
    mvn -q -B -f "$pom" dependency:copy -Dartifact="org.apache.kafka:connect-file:$KC_VERSION" \
      -DoutputDirectory="$KC_PLUGINS/connect-file" >>"$state/mvn.log" 2>&1 ||
      { echo "bench: Maven failed; see $state/mvn.log" >&2; exit 1; }
  fi
}
