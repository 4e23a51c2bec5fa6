// One user-assigned identity per kind of app (edge, node, catalog). Its roles are given where
// the resource is made (registry.bicep, kv-secret.bicep, storage-data.bicep), each scoped to
// exactly what that kind needs.
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
