// quackgate on Azure Container Apps: `azd up` deploys this (azure.yaml at the repository root).
//
//   client ─TLS─▶ edge app (public, QUERY_MIN..MAX_REPLICAS, no stickiness)
//                   └─TLS─▶ <node app>.internal.<domain>:443 ─▶ node n1..nK (1 replica each)
//                                                                 └─▶ catalog app (internal)
//                                                                 └─▶ Blob: DuckLake data
//
// Every secret reaches the apps as a Key Vault reference (keyVaultUrl + the app's identity);
// this template writes the values the preprovision hook generated into the vault, and never
// into an app. See infra/aca/README.md for parameters, ingress modes and operations.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name (AZURE_ENV_NAME); names the resource group.')
param environmentName string

@minLength(1)
param location string

@description('The quackgate image azd built in the registry (SERVICE_EDGE_IMAGE_NAME); empty on the first provision.')
param quackgateImage string = ''

@allowed([ 'http', 'tcp' ])
@description('''INGRESS_MODE. http (default): ACA's HTTP ingress terminates TLS with a managed
certificate on 443, and every request is cut at 240 s: a statement whose first rows take
longer fails with HTTP 504 (the session is then ended). tcp: a VNet-integrated environment,
TCP ingress on TCP_EXPOSED_PORT, the edge terminates TLS itself with the certificate from
Key Vault, and there is no request time limit.''')
param ingressMode string = 'http'

@description('INGRESS_MODE=tcp: the public port (ACA refuses 80 and 443 for external TCP).')
param tcpExposedPort string = '8443'

@description('QUERY_MIN_REPLICAS: edge replicas at least.')
param queryMinReplicas string = '2'
@description('QUERY_MAX_REPLICAS: edge replicas at most (the HTTP scale rule adds them).')
param queryMaxReplicas string = '4'
@description('NODE_COUNT: node apps, one replica each.')
param nodeCount string = '2'
@description('WORKERS_PER_NODE: DuckDB worker processes in each node.')
param workersPerNode string = '2'
@description('DUCKLAKE_DATA_PATH: az://<container>/<prefix>/ in the data storage account.')
param duckLakeDataPath string = 'az://lakehouse/data/'

@description('OPERATOR_PRINCIPAL_ID: a user or group that may read the client token and the lake\'s files; empty for none.')
param operatorPrincipalId string = ''
@allowed([ 'User', 'Group', 'ServicePrincipal' ])
param operatorPrincipalType string = 'User'

@secure()
@description('QUACK_TOKEN: the clients\' token, clear text, readable by the operator only.')
param quackToken string
@secure()
@description('QUACK_TOKEN_SHA256: its SHA-256 (`quackgate hash-token`), what the edges check.')
param quackTokenSha256 string
@secure()
@description('CATALOG_QUACK_TOKEN: the token the nodes\' workers present to the catalog.')
param catalogQuackToken string
@secure()
@description('CATALOG_QUACK_TOKEN_SHA256: its SHA-256, what the catalog checks.')
param catalogQuackTokenSha256 string
@secure()
@description('QUACKGATE_ID_SECRET: 64 hex characters that sign connection ids and the peer leg.')
param idSecret string
@secure()
@description('QUACKGATE_ID_SECRET_PREVIOUS: a secret that verifies ids and peer requests but signs nothing (the other half of an id-secret rotation; equal to idSecret outside one).')
param idSecretPrevious string
@secure()
@description('INGRESS_MODE=tcp: EDGE_TLS_CERT_B64, the edge\'s PEM certificate chain, base64.')
param edgeTlsCertB64 string = ''
@secure()
@description('INGRESS_MODE=tcp: EDGE_TLS_KEY_B64, its PEM private key, base64.')
param edgeTlsKeyB64 string = ''

@allowed([ 'true', 'false' ])
@description('''PROMETHEUS_METRICS: true adds an Azure Monitor workspace (managed Prometheus) and, in
every app, a Prometheus agent sidecar that scrapes the app's /metrics on its admin port and
remote-writes there with the app's identity. false (default): neither.''')
param prometheusMetrics string = 'false'

@description('Prefix of the app names: <prefix>-edge, <prefix>-n1.., <prefix>-catalog.')
param appPrefix string = 'qg'

var tags = { 'azd-env-name': environmentName }
var token = toLower(uniqueString(subscription().id, environmentName, location))
var nodes = int(nodeCount)
var tcp = ingressMode == 'tcp'
// az://<container>/<prefix>/ -> <container>
var dataContainer = split(replace(duckLakeDataPath, 'az://', ''), '/')[0]
// Where ACA's ingress (Envoy) connects from: its infrastructure addresses, and the VNet's.
var trustedProxies = [ '100.64.0.0/10', '10.0.0.0/8' ]
var metrics = prometheusMetrics == 'true'
// The metrics sidecar: Prometheus 3.5 (LTS) in agent mode, pinned by tag (no digest published
// in the documentation this template was written from).
var metricsImage = 'quay.io/prometheus/prometheus:v3.5.0'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    name: 'log-${token}'
    location: location
    tags: tags
  }
}

module edgeIdentity 'modules/identity.bicep' = {
  name: 'identity-edge'
  scope: rg
  params: {
    name: 'id-edge-${token}'
    location: location
    tags: tags
  }
}

module nodeIdentity 'modules/identity.bicep' = {
  name: 'identity-node'
  scope: rg
  params: {
    name: 'id-node-${token}'
    location: location
    tags: tags
  }
}

module catalogIdentity 'modules/identity.bicep' = {
  name: 'identity-catalog'
  scope: rg
  params: {
    name: 'id-catalog-${token}'
    location: location
    tags: tags
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  scope: rg
  params: {
    name: 'cr${token}'
    location: location
    tags: tags
    pullPrincipalIds: [
      edgeIdentity.outputs.principalId
      nodeIdentity.outputs.principalId
      catalogIdentity.outputs.principalId
    ]
  }
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${token}'
    location: location
    tags: tags
  }
}

// The secrets, each with exactly the identities that read it.
module secretQuackToken 'modules/kv-secret.bicep' = {
  name: 'secret-quack-token'
  scope: rg
  params: {
    vaultName: vault.outputs.name
    secretName: 'quack-token'
    value: quackToken
    readerPrincipalIds: []
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

module secretEdgeTokens 'modules/kv-secret.bicep' = {
  name: 'secret-edge-static-tokens'
  scope: rg
  params: {
    vaultName: vault.outputs.name
    secretName: 'edge-static-tokens'
    // The edges' auth.static_tokens_file (re-read every 2 s): a hash, no token.
    value: 'static_tokens = [{ name = "analysts", sha256 = "${quackTokenSha256}" }]'
    readerPrincipalIds: [ edgeIdentity.outputs.principalId ]
  }
}

module secretIdSecret 'modules/kv-secret.bicep' = {
  name: 'secret-id-secret'
  scope: rg
  params: {
    vaultName: vault.outputs.name
    secretName: 'id-secret'
    value: idSecret
    readerPrincipalIds: [ edgeIdentity.outputs.principalId, nodeIdentity.outputs.principalId ]
  }
}

module secretIdSecretPrevious 'modules/kv-secret.bicep' = {
  name: 'secret-id-secret-previous'
  scope: rg
  params: {
    vaultName: vault.outputs.name
    secretName: 'id-secret-previous'
    value: idSecretPrevious
    readerPrincipalIds: [ edgeIdentity.outputs.principalId, nodeIdentity.outputs.principalId ]
  }
}

module secretCatalogToken 'modules/kv-secret.bicep' = {
  name: 'secret-catalog-token'
  scope: rg
  params: {
    vaultName: vault.outputs.name
    secretName: 'catalog-token'
    value: catalogQuackToken
    readerPrincipalIds: [ nodeIdentity.outputs.principalId ]
  }
}

module secretCatalogTokens 'modules/kv-secret.bicep' = {
  name: 'secret-catalog-static-tokens'
  scope: rg
  params: {
    vaultName: vault.outputs.name
    secretName: 'catalog-static-tokens'
    value: 'static_tokens = [{ name = "workers", sha256 = "${catalogQuackTokenSha256}" }]'
    readerPrincipalIds: [ catalogIdentity.outputs.principalId ]
  }
}

module secretEdgeTlsCert 'modules/kv-secret.bicep' = if (tcp) {
  name: 'secret-edge-tls-cert'
  scope: rg
  params: {
    vaultName: vault.outputs.name
    secretName: 'edge-tls-cert'
    value: base64ToString(edgeTlsCertB64)
    readerPrincipalIds: [ edgeIdentity.outputs.principalId ]
    contentType: 'application/x-pem-file'
  }
}

module secretEdgeTlsKey 'modules/kv-secret.bicep' = if (tcp) {
  name: 'secret-edge-tls-key'
  scope: rg
  params: {
    vaultName: vault.outputs.name
    secretName: 'edge-tls-key'
    value: base64ToString(edgeTlsKeyB64)
    readerPrincipalIds: [ edgeIdentity.outputs.principalId ]
    contentType: 'application/x-pem-file'
  }
}

module dataStorage 'modules/storage-data.bicep' = {
  name: 'storage-data'
  scope: rg
  params: {
    name: 'stdata${token}'
    location: location
    tags: tags
    containerName: dataContainer
    // The nodes write with their system-assigned identities (nodeDataWriters, below).
    contributorPrincipalIds: []
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

module catalogStorage 'modules/storage-catalog.bicep' = {
  name: 'storage-catalog'
  scope: rg
  params: {
    name: 'stcat${token}'
    location: location
    tags: tags
  }
}

module network 'modules/network.bicep' = if (tcp) {
  name: 'network'
  scope: rg
  params: {
    name: 'vnet-${token}'
    location: location
    tags: tags
  }
}

// PROMETHEUS_METRICS=true: the Azure Monitor workspace the sidecars remote-write to, and the
// three identities as its publishers (on its data collection rule only).
module prometheus 'modules/prometheus.bicep' = if (metrics) {
  name: 'prometheus'
  scope: rg
  params: {
    name: 'amw-${token}'
    location: location
    tags: tags
    publisherPrincipalIds: [
      edgeIdentity.outputs.principalId
      nodeIdentity.outputs.principalId
      catalogIdentity.outputs.principalId
    ]
  }
}
var metricsRemoteWriteUrl = metrics ? prometheus.outputs.remoteWriteUrl : ''

module environment 'modules/environment.bicep' = {
  name: 'environment'
  scope: rg
  params: {
    name: 'cae-${token}'
    location: location
    tags: tags
    logAnalyticsName: monitoring.outputs.name
    catalogStorageAccountName: catalogStorage.outputs.name
    catalogShareName: catalogStorage.outputs.shareName
    infrastructureSubnetId: tcp ? network.outputs.infrastructureSubnetId : ''
  }
}

module catalog 'modules/catalog-app.bicep' = {
  name: 'app-catalog'
  scope: rg
  params: {
    name: '${appPrefix}-catalog'
    location: location
    tags: tags
    environmentId: environment.outputs.id
    identityId: catalogIdentity.outputs.id
    registryServer: registry.outputs.loginServer
    image: quackgateImage
    keyVaultUri: vault.outputs.uri
    storageName: environment.outputs.catalogStorageName
    trustedProxies: trustedProxies
    identityClientId: catalogIdentity.outputs.clientId
    metricsRemoteWriteUrl: metricsRemoteWriteUrl
    metricsImage: metricsImage
  }
  dependsOn: [ secretCatalogTokens ]
}

module nodeApps 'modules/node-app.bicep' = [for i in range(0, nodes): {
  name: 'app-node-n${i + 1}'
  scope: rg
  params: {
    name: '${appPrefix}-n${i + 1}'
    location: location
    tags: tags
    environmentId: environment.outputs.id
    identityId: nodeIdentity.outputs.id
    identityClientId: nodeIdentity.outputs.clientId
    registryServer: registry.outputs.loginServer
    image: quackgateImage
    keyVaultUri: vault.outputs.uri
    nodeId: 'n${i + 1}'
    workers: int(workersPerNode)
    catalogAddress: '${catalog.outputs.fqdn}:443'
    dataPath: duckLakeDataPath
    storageAccountName: dataStorage.outputs.name
    ingressMode: ingressMode
    metricsRemoteWriteUrl: metricsRemoteWriteUrl
    metricsImage: metricsImage
  }
  dependsOn: [ secretIdSecret, secretIdSecretPrevious, secretCatalogToken ]
}]

var nodeAppNames = [for i in range(0, nodes): '${appPrefix}-n${i + 1}']

module nodeDataWriters 'modules/data-writers.bicep' = {
  name: 'data-writers'
  scope: rg
  params: {
    storageAccountName: dataStorage.outputs.name
    containerName: dataStorage.outputs.containerName
    principalIds: [for i in range(0, nodes): nodeApps[i].outputs.blobPrincipalId]
  }
}

// The edges' peers: each node app's internal FQDN (<app>.internal.<environment default
// domain>, which is what ingress.fqdn reports for an internal ingress), on 443 behind HTTP
// ingress, or on the peer port behind TCP ingress (INGRESS_MODE=tcp).
var nodePeers = [for i in range(0, nodes): {
  id: 'n${i + 1}'
  address: nodeApps[i].outputs.peerAddress
}]

module edge 'modules/edge-app.bicep' = {
  name: 'app-edge'
  scope: rg
  params: {
    name: '${appPrefix}-edge'
    location: location
    tags: tags
    environmentId: environment.outputs.id
    identityId: edgeIdentity.outputs.id
    registryServer: registry.outputs.loginServer
    image: quackgateImage
    keyVaultUri: vault.outputs.uri
    ingressMode: ingressMode
    tcpExposedPort: int(tcpExposedPort)
    minReplicas: int(queryMinReplicas)
    maxReplicas: int(queryMaxReplicas)
    nodePeers: nodePeers
    trustedProxies: trustedProxies
    identityClientId: edgeIdentity.outputs.clientId
    metricsRemoteWriteUrl: metricsRemoteWriteUrl
    metricsImage: metricsImage
  }
  dependsOn: [ secretEdgeTokens, secretIdSecret, secretIdSecretPrevious, secretEdgeTlsCert, secretEdgeTlsKey ]
}

// azd stores these in the environment (.azure/<env>/.env); the operator scripts read them.
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_CONTAINER_APPS_ENVIRONMENT_NAME string = environment.outputs.name
output AZURE_CONTAINER_APPS_DEFAULT_DOMAIN string = environment.outputs.defaultDomain
output AZURE_KEY_VAULT_NAME string = vault.outputs.name
output QUACKGATE_ENDPOINT string = edge.outputs.fqdn
output QUACKGATE_PORT string = tcp ? tcpExposedPort : '443'
output EDGE_APP_NAME string = edge.outputs.name
output NODE_APP_NAMES string = join(nodeAppNames, ',')
output CATALOG_APP_NAME string = catalog.outputs.name
output DATA_STORAGE_ACCOUNT string = dataStorage.outputs.name
output DATA_CONTAINER string = dataStorage.outputs.containerName
output LOG_ANALYTICS_WORKSPACE_ID string = monitoring.outputs.customerId
output AZURE_MONITOR_WORKSPACE_ID string = metrics ? prometheus.outputs.workspaceId : ''
output PROMETHEUS_QUERY_ENDPOINT string = metrics ? prometheus.outputs.queryEndpoint : ''
