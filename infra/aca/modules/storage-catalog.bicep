// The catalog's DuckDB file lives on an Azure Files share mounted into the catalog app. Azure
// Files over SMB, as Container Apps mount it, authenticates with the account key (the
// environment's storage definition holds it; no app and no operator sees it), so this account,
// unlike the data account, keeps shared-key access on. Nothing else is stored here.
param name string
param location string
param tags object = {}
param shareName string = 'catalog'
@description('GiB.')
param shareQuota int = 10

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: the environment mounts the share over the account's public endpoint (SMB with the account key); a private endpoint needs the VNet environment
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; anonymous blob access is off and the account holds only the share
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_GRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource files 'Microsoft.Storage/storageAccounts/fileServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    shareDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource share 'Microsoft.Storage/storageAccounts/fileServices/shares@2023-05-01' = {
  parent: files
  name: shareName
  properties: {
    shareQuota: shareQuota
    enabledProtocols: 'SMB'
  }
}

output name string = account.name
output shareName string = share.name
