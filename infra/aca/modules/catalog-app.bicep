// The catalog app: `quackgate catalog`, the DuckLake's metadata in one DuckDB file on the Azure
// Files share, internal ingress, exactly one replica (DuckDB's file lock admits one process).
// The nodes' workers reach it at <name>.internal.<domain>:443 over HTTPS (the ingress's
// certificate) with the catalog token; it accepts only that token's hash.
param name string
param location string
param tags object = {}
param environmentId string
@description('The catalog identity: AcrPull, and Key Vault Secrets User on catalog-static-tokens only.')
param identityId string
param registryServer string
param image string
param keyVaultUri string
@description('The environment storage definition of the Azure Files share.')
param storageName string
param trustedProxies array
param cpu string = '1.0'
param memory string = '2Gi'

var placeholder = empty(image)
var configFile = '/etc/quackgate/aca/catalog.toml'
var adminPort = 9464
var fileSecrets = [ 'catalog-static-tokens' ]

var probes = placeholder ? [] : [
  { type: 'Startup', httpGet: { path: '/healthz', port: adminPort }, initialDelaySeconds: 5, periodSeconds: 5, failureThreshold: 10 }
  { type: 'Liveness', httpGet: { path: '/healthz', port: adminPort }, periodSeconds: 10, failureThreshold: 3 }
  { type: 'Readiness', httpGet: { path: '/readyz', port: adminPort }, periodSeconds: 3, failureThreshold: 2 }
]

resource app 'Microsoft.App/containerApps@2026-07-01' = {
  name: name
  location: location
  tags: union(tags, { 'quackgate-role': 'catalog' })
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      registries: [ { server: registryServer, identity: identityId } ]
      secrets: [for s in fileSecrets: {
        name: s
        keyVaultUrl: '${keyVaultUri}secrets/${s}'
        identity: identityId
      }]
      ingress: {
        external: false
        transport: 'http'
        targetPort: placeholder ? 80 : 9500
        allowInsecure: false
        stickySessions: { affinity: 'none' }
        traffic: [ { latestRevision: true, weight: 100 } ]
      }
    }
    template: {
      terminationGracePeriodSeconds: 30
      containers: [
        {
          name: 'catalog'
          image: placeholder ? 'mcr.microsoft.com/k8se/quickstart:latest' : image
          args: placeholder ? [] : [ 'catalog', '--config', configFile ]
          env: [
            { name: 'QUACKGATE__GATEWAY__TRUSTED_PROXIES', value: string(trustedProxies) }
          ]
          resources: { cpu: json(cpu), memory: memory }
          probes: probes
          volumeMounts: [
            { volumeName: 'secrets', mountPath: '/run/secrets/quackgate' }
            { volumeName: 'catalog', mountPath: '/var/lib/quackgate/catalog' }
            { volumeName: 'tmp', mountPath: '/tmp' }
          ]
        }
      ]
      volumes: [
        {
          name: 'secrets'
          storageType: 'Secret'
          secrets: [for s in fileSecrets: { secretRef: s, path: s }]
        }
        {
          name: 'catalog'
          storageType: 'AzureFile'
          storageName: storageName
          // The image runs as uid 10001; SMB has no owners of its own.
          mountOptions: 'uid=10001,gid=10001,dir_mode=0700,file_mode=0600'
        }
        { name: 'tmp', storageType: 'EmptyDir' }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: 1
        rules: []
      }
    }
  }
}

output name string = app.name
output fqdn string = app.properties.configuration.ingress.fqdn
