// The Key Vault, in RBAC mode: no access policies, every read is a role assignment, and those
// are made per secret (kv-secret.bicep), so each identity reads exactly the secrets it needs.
param name string
param location string
param tags object = {}
param tenantId string = subscription().tenantId

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Container Apps resolve Key Vault references over the vault's public endpoint unless the environment is in a VNet with a private endpoint; RBAC per secret is the gate
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: true
    // The environment has no private endpoint into the vault (see infra/aca/README.md), so
    // the network stays open and RBAC is the gate.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
