// Storage Blob Data Contributor on the lake's data container for the node apps' system-assigned
// identities. DuckDB's azure extension asks the managed identity endpoint for a token without a
// client id (ManagedIdentityCredential with default options, azure-sdk-for-cpp), which selects
// the system-assigned identity; AZURE_CLIENT_ID is not read. The nodes' user-assigned identity
// keeps Key Vault and registry access, which must exist before the app starts; this runs after
// the node apps exist, since their system identities are made with them.
param storageAccountName string
param containerName string
@description('The node apps\' system-assigned principals.')
param principalIds array

var contributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobs
  name: containerName
}

resource writers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(container.id, principalId, contributor)
  scope: container
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: contributor
  }
}]
