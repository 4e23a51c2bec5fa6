// The container registry: admin user off, so the only way to pull is a managed identity with
// AcrPull (the edge, node and catalog identities, on this registry only). `azd up` builds the
// image here remotely (ACR build), so the operator's machine needs no Docker engine.
param name string
param location string
param tags object = {}
@description('Principal ids that may pull images (AcrPull on this registry).')
param pullPrincipalIds array

var acrPull = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43d25b8c4dc3')

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_139: ACR build (azd's remote build) and Container Apps outside a VNet pull over the public endpoint; anonymous pull and the admin user are off, AcrPull is the gate
  // checkov:skip=CKV_AZURE_166: quarantine is a Premium preview feature; the only image is the one azd builds from this repository in this registry
  name: name
  location: location
  tags: tags
  sku: { name: 'Standard' }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

resource pull 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in pullPrincipalIds: {
  name: guid(registry.id, principalId, acrPull)
  scope: registry
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: acrPull
  }
}]

output id string = registry.id
output name string = registry.name
output loginServer string = registry.properties.loginServer
