// Only for INGRESS_MODE=tcp: external TCP ingress needs an environment in a virtual network of
// our own. One subnet, delegated to Microsoft.App/environments (a workload-profiles environment
// needs at least a /27).
param name string
param location string
param tags object = {}
param addressPrefix string = '10.40.0.0/16'
param infrastructureSubnetPrefix string = '10.40.0.0/23'

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: { addressPrefixes: [ addressPrefix ] }
    subnets: [
      {
        name: 'infrastructure'
        properties: {
          addressPrefix: infrastructureSubnetPrefix
          delegations: [
            {
              name: 'containerapps'
              properties: { serviceName: 'Microsoft.App/environments' }
            }
          ]
        }
      }
    ]
  }
}

output id string = vnet.id
output infrastructureSubnetId string = '${vnet.id}/subnets/infrastructure'
