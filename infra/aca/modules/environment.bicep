// The Container Apps environment: logs to Log Analytics, peer traffic (ingress to app and app
// to app) encrypted with platform certificates, and the catalog's Azure Files share as an
// environment storage definition. With a subnet id (INGRESS_MODE=tcp) it joins that virtual
// network, which external TCP ingress needs.
param name string
param location string
param tags object = {}
param logAnalyticsName string
param catalogStorageAccountName string
param catalogShareName string
@description('The storage definition\'s name, which the catalog app\'s volume names.')
param catalogStorageName string = 'catalog'
@description('Empty: no virtual network of our own (INGRESS_MODE=http).')
param infrastructureSubnetId string = ''

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource catalogAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: catalogStorageAccountName
}

resource environment 'Microsoft.App/managedEnvironments@2026-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
    workloadProfiles: [
      { name: 'Consumption', workloadProfileType: 'Consumption' }
    ]
    peerTrafficConfiguration: {
      encryption: { enabled: true }
    }
    vnetConfiguration: empty(infrastructureSubnetId) ? null : {
      infrastructureSubnetId: infrastructureSubnetId
      internal: false
    }
    zoneRedundant: !empty(infrastructureSubnetId)
  }
}

resource catalogStorage 'Microsoft.App/managedEnvironments/storages@2026-07-01' = {
  parent: environment
  name: catalogStorageName
  properties: {
    azureFile: {
      accountName: catalogAccount.name
      accountKey: catalogAccount.listKeys().keys[0].value
      shareName: catalogShareName
      accessMode: 'ReadWrite'
    }
  }
}

output id string = environment.id
output name string = environment.name
// <unique-id>.<region>.azurecontainerapps.io: an app's internal FQDN is
// <app>.internal.<defaultDomain>, its public one <app>.<defaultDomain>.
output defaultDomain string = environment.properties.defaultDomain
output staticIp string = environment.properties.staticIp
output catalogStorageName string = catalogStorage.name
