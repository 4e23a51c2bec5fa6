// The catalog app: `quackgate catalog`, the DuckLake's metadata in one DuckDB file on the Azure
// Files share, internal ingress, exactly one replica (DuckDB's file lock admits one process).
// The nodes' workers reach it at <name>.internal.<domain>:443 over HTTPS (the ingress's
// certificate) with the catalog token; it accepts only that token's hash.
param name string
param location string
param tags object = {}
param environmentId string
@description('The catalog identity: AcrPull, and Key Vault Secrets User on catalog-static-tokens only.')
param identityId string
param registryServer string
param image string
param keyVaultUri string
@description('The environment storage definition of the Azure Files share.')
param storageName string
param trustedProxies array
@description('Its client id: the metrics sidecar remote-writes with this identity (Monitoring Metrics Publisher on the data collection rule).')
param identityClientId string = ''
@description('PROMETHEUS_METRICS: the remote-write URL of modules/prometheus.bicep\'s data collection rule; empty (the default) for no metrics sidecar.')
param metricsRemoteWriteUrl string = ''
@description('The metrics sidecar\'s image (Prometheus in agent mode).')
param metricsImage string = ''
@description('How often the sidecar scrapes /metrics.')
param metricsScrapeInterval string = '15s'
param cpu string = '1.0'
param memory string = '2Gi'

var placeholder = empty(image)
var configFile = '/etc/quackgate/aca/catalog.toml'
var adminPort = 9464
// Probes reach only the health listener (/healthz, /readyz); the admin listener is loopback.
var healthPort = 9465
var fileSecrets = [ 'catalog-static-tokens' ]

var probes = placeholder ? [] : [
  { type: 'Startup', httpGet: { path: '/healthz', port: healthPort }, initialDelaySeconds: 5, periodSeconds: 5, failureThreshold: 10 }
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
    external_labels: { app: name, role: 'catalog', replica: '$CONTAINER_APP_REPLICA_NAME' }
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
  tags: union(tags, { 'quackgate-role': 'catalog' })
  identity: {
    type: 'UserAssigned'
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
        transport: 'http'
        targetPort: placeholder ? 80 : 9500
        allowInsecure: false
        stickySessions: { affinity: 'none' }
        traffic: [ { latestRevision: true, weight: 100 } ]
      }
    }
    template: {
      terminationGracePeriodSeconds: 30
      containers: concat([
        {
          name: 'catalog'
          image: placeholder ? 'mcr.microsoft.com/k8se/quickstart:latest' : image
          args: placeholder ? [] : [ 'catalog', '--config', configFile ]
          env: [
            { name: 'QUACKGATE__GATEWAY__TRUSTED_PROXIES', value: string(trustedProxies) }
          ]
          resources: { cpu: json(cpu), memory: memory }
          probes: probes
          volumeMounts: [
            { volumeName: 'secrets', mountPath: '/run/secrets/quackgate' }
            { volumeName: 'catalog', mountPath: '/var/lib/quackgate/catalog' }
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
        {
          name: 'catalog'
          storageType: 'AzureFile'
          storageName: storageName
          // The image runs as uid 10001; SMB has no owners of its own.
          mountOptions: 'uid=10001,gid=10001,dir_mode=0700,file_mode=0600'
        }
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
output fqdn string = app.properties.configuration.ingress.fqdn
