// Azure Monitor managed Prometheus for the apps' /metrics (PROMETHEUS_METRICS=true). Azure
// Monitor cannot scrape Container Apps itself, so each app runs a Prometheus agent sidecar that
// scrapes its own replica and remote-writes here. This module makes the Azure Monitor
// workspace, a data collection endpoint and rule of our own in this resource group (the
// workspace's default ones live in a managed resource group this deployment cannot scope a role
// assignment to), and Monitoring Metrics Publisher for the apps' identities on that rule only.
param name string
param location string
param tags object = {}
@description('The apps\' identities (principal ids): Monitoring Metrics Publisher on this data collection rule, nothing else.')
param publisherPrincipalIds array

var metricsPublisher = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')

resource workspace 'Microsoft.Monitor/accounts@2023-04-03' = {
  name: name
  location: location
  tags: tags
}

resource endpoint 'Microsoft.Insights/dataCollectionEndpoints@2022-06-01' = {
  name: 'dce-${name}'
  location: location
  tags: tags
  kind: 'Linux'
  properties: {}
}

resource rule 'Microsoft.Insights/dataCollectionRules@2022-06-01' = {
  name: 'dcr-${name}'
  location: location
  tags: tags
  kind: 'Linux'
  properties: {
    description: 'quackgate: Prometheus remote write from the Container Apps sidecars'
    dataCollectionEndpointId: endpoint.id
    dataSources: {
      prometheusForwarder: [
        { name: 'PrometheusDataSource', streams: [ 'Microsoft-PrometheusMetrics' ], labelIncludeFilter: {} }
      ]
    }
    destinations: {
      monitoringAccounts: [ { accountResourceId: workspace.id, name: 'MonitoringAccount1' } ]
    }
    dataFlows: [ { streams: [ 'Microsoft-PrometheusMetrics' ], destinations: [ 'MonitoringAccount1' ] } ]
  }
}

resource publishers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in publisherPrincipalIds: {
  name: guid(rule.id, principalId, metricsPublisher)
  scope: rule
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: metricsPublisher
  }
}]

output workspaceId string = workspace.id
output workspaceName string = workspace.name
// Where Grafana (or any PromQL client with Monitoring Data Reader on the workspace) queries.
output queryEndpoint string = workspace.properties.metrics.prometheusQueryEndpoint
// The remote-write URL: the endpoint's metrics ingestion host, the rule's immutable id, the
// Prometheus stream (Microsoft's documented format).
output remoteWriteUrl string = '${endpoint.properties.metricsIngestion.endpoint}/dataCollectionRules/${rule.properties.immutableId}/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24'
