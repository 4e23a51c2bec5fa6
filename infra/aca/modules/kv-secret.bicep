// One Key Vault secret and who may read it: Key Vault Secrets User on this secret alone (a
// role assignment whose scope is the secret, not the vault).
param vaultName string
param secretName string
@secure()
param value string
@description('Principals of kind ServicePrincipal (the apps\' identities) that read this secret.')
param readerPrincipalIds array = []
@description('An operator (User or Group) that reads this secret too; empty for none.')
param operatorPrincipalId string = ''
param operatorPrincipalType string = 'User'
param contentType string = 'text/plain'

var secretsUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: an expired secret would stop the apps (a Key Vault reference to it fails); secrets are rotated by the preprovision hook and an operator, as infra/aca/README.md says, not by expiry
  parent: vault
  name: secretName
  properties: {
    value: value
    contentType: contentType
    attributes: { enabled: true }
  }
}

resource readers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in readerPrincipalIds: {
  name: guid(secret.id, principalId, secretsUser)
  scope: secret
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: secretsUser
  }
}]

resource operator 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(secret.id, operatorPrincipalId, secretsUser)
  scope: secret
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: secretsUser
  }
}

output name string = secret.name
// The versionless URI: Container Apps follow the latest version of the secret.
output uri string = '${vault.properties.vaultUri}secrets/${secretName}'
