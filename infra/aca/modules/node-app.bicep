// One node app: `quackgate node`, DuckDB workers behind its peer listener, internal ingress
// only, exactly one replica (min = max = 1): its sessions live in this one process, and ACA
// gives replicas of one app no address of their own. Capacity grows by adding node apps
// (NODE_COUNT), never replicas. A template change starts a new replica before the old one
// stops, which ends the old one's sessions: plan node changes as drains (infra/aca/README.md).
param name string
param location string
param tags object = {}
param environmentId string
@description('The node identity: AcrPull, Key Vault Secrets User on id-secret, id-secret-previous and catalog-token. Blob storage is reached with the app\'s system-assigned identity (modules/data-writers.bicep).')
param identityId string
@description('Its client id: the metrics sidecar remote-writes with this identity (Monitoring Metrics Publisher on the data collection rule).')
param identityClientId string = ''
param registryServer string
param image string
param keyVaultUri string
@description('n1, n2, ...: unique in the cluster, part of every connection id it mints.')
param nodeId string
param workers int = 2
@description('DuckDB memory_limit per worker.')
param workerMemoryLimit string = '1500MB'
@description('<catalog app internal FQDN>:443')
param catalogAddress string
@description('az://<container>/<prefix>/')
param dataPath string
param storageAccountName string
@description('PROMETHEUS_METRICS: the remote-write URL of modules/prometheus.bicep\'s data collection rule; empty (the default) for no metrics sidecar.')
param metricsRemoteWriteUrl string = ''
@description('The metrics sidecar\'s image (Prometheus in agent mode).')
param metricsImage string = ''
@description('How often the sidecar scrapes /metrics.')
param metricsScrapeInterval string = '15s'
param cpu string = '2.0'
param memory string = '4Gi'
@description('gateway.shutdown_grace_secs: how long open sessions get after SIGTERM.')
param shutdownGraceSecs int = 300
@allowed([ 'http', 'tcp' ])
@description('''http: internal HTTP ingress (TLS by ACA, edges dial <fqdn>:443, 240 s per request).
tcp: internal TCP ingress on the peer port (edges dial <fqdn>:9601, no request limit; the leg is
signed by quackgate and encrypted by the environment's peer traffic encryption).''')
param ingressMode string = 'http'

var placeholder = empty(image)
var configFile = '/etc/quackgate/aca/node.toml'
var adminPort = 9464
// Probes reach only the health listener (/healthz, /readyz); the admin listener is loopback.
var healthPort = 9465
var peerPort = 9601
var fileSecrets = [ 'id-secret', 'id-secret-previous', 'catalog-token' ]

var probes = placeholder ? [] : [
  { type: 'Startup', httpGet: { path: '/healthz', port: healthPort }, initialDelaySeconds: 10, periodSeconds: 6, failureThreshold: 10 }
  { type: 'Liveness', httpGet: { path: '/healthz', port: healthPort }, periodSeconds: 10, failureThreshold: 3 }
  { type: 'Readiness', httpGet: { path: '/readyz', port: healthPort }, periodSeconds: 3, failureThreshold: 2 }
]

// The metrics sidecar (PROMETHEUS_METRICS=true): Prometheus in agent mode scrapes this replica's
// admin listener over the replica's shared loopback and remote-writes to the Azure Monitor
// workspace with the app's identity. Its config is JSON (which YAML parsers read), passed in an
// env var because ACA has no config-file volume but secrets; it holds no secret. The replica
// label comes from ACA's CONTAINER_APP_REPLICA_NAME (expanded by Prometheus in external labels).
var metricsOn = !(placeholder || empty(metricsRemoteWriteUrl))
var prometheusConfig = {
  global: {
    scrape_interval: metricsScrapeInterval
    external_labels: { app: name, role: 'node', replica: '$CONTAINER_APP_REPLICA_NAME' }
  }
  scrape_configs: [
    { job_name: 'quackgate', metrics_path: '/metrics', static_configs: [ { targets: [ '127.0.0.1:${adminPort}' ] } ] }
  ]
  remote_write: [
    { url: metricsRemoteWriteUrl, azuread: { cloud: 'AzurePublic', managed_identity: { client_id: identityClientId } } }
  ]
}
var sidecars = metricsOn ? [
  {
    name: 'prometheus'
    image: metricsImage
    command: [ '/bin/sh', '-c', 'echo "$PROMETHEUS_CONFIG" > /prometheus/prometheus.yml && exec /bin/prometheus --agent --config.file=/prometheus/prometheus.yml --storage.agent.path=/prometheus --web.listen-address=127.0.0.1:9090' ]
    env: [ { name: 'PROMETHEUS_CONFIG', value: string(prometheusConfig) } ]
    resources: { cpu: json('0.25'), memory: '0.5Gi' }
  }
] : []

resource app 'Microsoft.App/containerApps@2026-07-01' = {
  name: name
  location: location
  tags: union(tags, { 'quackgate-role': 'node', 'quackgate-node-id': nodeId })
  identity: {
    // The system-assigned identity is the one DuckDB's azure extension uses for Blob storage
    // (it requests a token without a client id); the user-assigned one pulls the image and reads
    // Key Vault before the app starts.
    type: 'SystemAssigned,UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      registries: [ { server: registryServer, identity: identityId } ]
      secrets: [for s in fileSecrets: {
        name: s
        keyVaultUrl: '${keyVaultUri}secrets/${s}'
        identity: identityId
      }]
      ingress: {
        external: false
        transport: ingressMode
        targetPort: placeholder ? 80 : peerPort
        exposedPort: ingressMode == 'tcp' ? peerPort : null
        allowInsecure: false
        stickySessions: { affinity: 'none' }
        traffic: [ { latestRevision: true, weight: 100 } ]
      }
    }
    template: {
      terminationGracePeriodSeconds: shutdownGraceSecs + 30
      containers: concat([
        {
          name: 'node'
          image: placeholder ? 'mcr.microsoft.com/k8se/quickstart:latest' : image
          args: placeholder ? [] : [ 'node', '--config', configFile ]
          env: [
            { name: 'QUACKGATE__GATEWAY__NODE_ID', value: nodeId }
            { name: 'QUACKGATE__GATEWAY__SHUTDOWN_GRACE_SECS', value: string(shutdownGraceSecs) }
            { name: 'QUACKGATE__WORKERS__COUNT', value: string(workers) }
            { name: 'QUACKGATE__WORKERS__MEMORY_LIMIT', value: workerMemoryLimit }
            { name: 'QUACKGATE__WORKERS__DUCKLAKE__CATALOG', value: catalogAddress }
            { name: 'QUACKGATE__WORKERS__DUCKLAKE__DATA_PATH', value: dataPath }
            { name: 'QUACKGATE__WORKERS__DUCKLAKE__AZURE__ACCOUNT_NAME', value: storageAccountName }
          ]
          resources: { cpu: json(cpu), memory: memory }
          probes: probes
          volumeMounts: [
            { volumeName: 'secrets', mountPath: '/run/secrets/quackgate' }
            { volumeName: 'tmp', mountPath: '/tmp' }
          ]
        }
      ], sidecars)
      volumes: [
        {
          name: 'secrets'
          storageType: 'Secret'
          secrets: [for s in fileSecrets: { secretRef: s, path: s }]
        }
        // The workers' private folders and spill files (TMPDIR).
        { name: 'tmp', storageType: 'EmptyDir' }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: 1
        rules: []
      }
    }
  }
}

output name string = app.name
output blobPrincipalId string = app.identity.principalId
// <name>.internal.<environment default domain>: what the edges dial, as Host and SNI.
output fqdn string = app.properties.configuration.ingress.fqdn
// What the edges dial: the ingress's TLS port, or with TCP ingress the peer port itself.
output peerAddress string = ingressMode == 'tcp' ? '${app.properties.configuration.ingress.fqdn}:${peerPort}' : '${app.properties.configuration.ingress.fqdn}:443'
