// The edge app: `quackgate edge`, public, stateless, no workers, N replicas with no sticky
// sessions. It checks client tokens and routes every request to the node its signed id names
// (the nodes' internal FQDNs, in QUACKGATE__CLUSTER__PEERS__<ID>).
//
// INGRESS_MODE=http: ACA's HTTP ingress terminates TLS (a managed certificate) and has a
//   240 s request timeout: a statement whose first rows take longer fails at the client with
//   HTTP 504, and quackgate ends its session (README.md, "Long statements").
// INGRESS_MODE=tcp: TCP ingress on exposedPort passes bytes through; the edge terminates TLS
//   with the certificate from Key Vault; no request timeout. Needs a VNet environment.
param name string
param location string
param tags object = {}
param environmentId string
@description('The edge identity: AcrPull, and Key Vault Secrets User on id-secret, id-secret-previous, edge-static-tokens (and edge-tls-cert/-key for tcp). Each is a file of the secret volume; quackgate re-reads the tokens, the id secrets and the TLS pair when they change.')
param identityId string
param registryServer string
@description('The quackgate image; empty on the first provision, before azd has built it.')
param image string
@description('https://<vault>.vault.azure.net/')
param keyVaultUri string
@allowed([ 'http', 'tcp' ])
param ingressMode string = 'http'
@description('INGRESS_MODE=tcp only: the public port (not 80 or 443, unique in the environment).')
param tcpExposedPort int = 8443
param minReplicas int = 2
param maxReplicas int = 4
@description('Concurrent requests per replica before the HTTP scale rule adds one (connections, for tcp).')
param concurrentRequests int = 50
@description('The nodes: [{ id: "n1", address: "<fqdn>:443" }].')
param nodePeers array
@description('Networks whose X-Forwarded-For is believed: the ingress (ACA\'s infrastructure addresses).')
param trustedProxies array
@description('Its client id: the metrics sidecar remote-writes with this identity (Monitoring Metrics Publisher on the data collection rule).')
param identityClientId string = ''
@description('PROMETHEUS_METRICS: the remote-write URL of modules/prometheus.bicep\'s data collection rule; empty (the default) for no metrics sidecar.')
param metricsRemoteWriteUrl string = ''
@description('The metrics sidecar\'s image (Prometheus in agent mode).')
param metricsImage string = ''
@description('How often the sidecar scrapes /metrics.')
param metricsScrapeInterval string = '15s'
param cpu string = '0.5'
param memory string = '1Gi'

var placeholder = empty(image)
var configFile = '/etc/quackgate/aca/edge.toml'
var adminPort = 9464
// Probes reach only the health listener (/healthz, /readyz); the admin listener is loopback.
var healthPort = 9465
var targetPort = placeholder ? 80 : (ingressMode == 'tcp' ? 8443 : 8080)
var tlsSecrets = ingressMode == 'tcp' ? [ 'edge-tls-cert', 'edge-tls-key' ] : []
var fileSecrets = concat([ 'id-secret', 'id-secret-previous', 'edge-static-tokens' ], tlsSecrets)

var baseEnv = [
  { name: 'QUACKGATE__GATEWAY__TRUSTED_PROXIES', value: string(trustedProxies) }
]
var peerEnv = [for peer in nodePeers: {
  name: 'QUACKGATE__CLUSTER__PEERS__${toUpper(peer.id)}'
  value: peer.address
}]
var tcpEnv = ingressMode == 'tcp' ? [
  // The nodes' internal TCP ingress passes bytes: the peer leg is plain (signed by quackgate,
  // encrypted by the environment's peer traffic encryption).
  { name: 'QUACKGATE__CLUSTER__PEER_TLS', value: 'false' }
  { name: 'QUACKGATE__GATEWAY__LISTEN', value: '0.0.0.0:8443' }
  { name: 'QUACKGATE__GATEWAY__PLAIN_LISTEN', value: '127.0.0.1:8080' }
  { name: 'QUACKGATE__TLS__CERT', value: '/run/secrets/quackgate/edge-tls-cert' }
  { name: 'QUACKGATE__TLS__KEY', value: '/run/secrets/quackgate/edge-tls-key' }
] : []

var probes = placeholder ? [] : [
  { type: 'Startup', httpGet: { path: '/healthz', port: healthPort }, initialDelaySeconds: 2, periodSeconds: 3, failureThreshold: 10 }
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
    external_labels: { app: name, role: 'edge', replica: '$CONTAINER_APP_REPLICA_NAME' }
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

var httpScale = [
  { name: 'http-requests', http: { metadata: { concurrentRequests: string(concurrentRequests) } } }
]
var tcpScale = [
  { name: 'tcp-connections', tcp: { metadata: { concurrentConnections: string(concurrentRequests) } } }
]

resource app 'Microsoft.App/containerApps@2026-07-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'edge', 'quackgate-role': 'edge' })
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
        external: true
        transport: ingressMode
        targetPort: targetPort
        exposedPort: ingressMode == 'tcp' ? tcpExposedPort : null
        allowInsecure: false
        stickySessions: { affinity: 'none' }
        traffic: [ { latestRevision: true, weight: 100 } ]
      }
    }
    template: {
      terminationGracePeriodSeconds: 45
      containers: concat([
        {
          name: 'edge'
          image: placeholder ? 'mcr.microsoft.com/k8se/quickstart:latest' : image
          args: placeholder ? [] : [ 'edge', '--config', configFile ]
          env: concat(baseEnv, peerEnv, tcpEnv)
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
        { name: 'tmp', storageType: 'EmptyDir' }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: ingressMode == 'tcp' ? tcpScale : httpScale
      }
    }
  }
}

output name string = app.name
output fqdn string = app.properties.configuration.ingress.fqdn
