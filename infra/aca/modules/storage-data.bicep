// The lake's data: Parquet files at az://<container>/<prefix>/. Blob only, no shared key (so
// no connection string exists to leak), no anonymous access; the nodes reach it with their
// managed identity, which holds Storage Blob Data Contributor on this one container.
param name string
param location string
param tags object = {}
param containerName string
@description('Principals (the node identity) with Storage Blob Data Contributor on the container.')
param contributorPrincipalIds array
@description('Principals (read-only workers, if any) with Storage Blob Data Reader on the container.')
param readerPrincipalIds array = []
@description('An operator who may list and read the files (validate-deployment.sh checks that writes land); empty for none.')
param operatorPrincipalId string = ''
param operatorPrincipalType string = 'User'
@description('Geo-redundant by default: the lake\'s files are its only copy.')
param sku string = 'Standard_GRS'

var contributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
var reader = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1')

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Container Apps outside a virtual network (INGRESS_MODE=http) reach storage over its public endpoint; every request needs an Entra token (shared key off, no anonymous access)
  // checkov:skip=CKV_AZURE_59: same reason: a private endpoint needs the VNet environment and private DNS, which this template does not make (README: what is left)
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: sku }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // Container Apps without a private endpoint reach the account over its public endpoint;
    // anonymous access is off and every request needs an Entra token.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}

resource writers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in contributorPrincipalIds: {
  name: guid(container.id, principalId, contributor)
  scope: container
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: contributor
  }
}]

resource readers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in readerPrincipalIds: {
  name: guid(container.id, principalId, reader)
  scope: container
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: reader
  }
}]

resource operator 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(container.id, operatorPrincipalId, reader)
  scope: container
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: reader
  }
}

output name string = account.name
output containerName string = container.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
