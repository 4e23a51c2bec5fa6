#!/usr/bin/env sh
# azd postdeploy hook: azd builds the image in ACR (remote build) and deploys it to the edge
# app (the service `edge` in azure.yaml). The node apps and the catalog run the same image:
# this rolls it to them, the catalog first, then one node at a time. A node's new revision
# replaces its one replica, which ends that node's open sessions: run deploys in a quiet
# period, or drain first (infra/aca/README.md, "Scale-in").
set -eu

image=$(azd env get-value SERVICE_EDGE_IMAGE_NAME)
rg=$(azd env get-value AZURE_RESOURCE_GROUP)
catalog=$(azd env get-value CATALOG_APP_NAME)
nodes=$(azd env get-value NODE_APP_NAMES)
[ -n "$image" ] || { echo "postdeploy: no SERVICE_EDGE_IMAGE_NAME; nothing to roll" >&2; exit 0; }

current() { az containerapp show -g "$rg" -n "$1" --query 'properties.template.containers[0].image' -o tsv; }

# The first `azd up` provisions before any image exists: the apps start from a placeholder
# image without quackgate's args, probes and ports (main.bicep, quackgateImage empty). Now
# that the image exists, provision again: main.bicep then gives every app the image with all
# its settings (azd passes SERVICE_EDGE_IMAGE_NAME as quackgateImage). No session exists yet.
case $(current "$catalog") in
    *k8se/quickstart*)
        echo "postdeploy: first deployment: provisioning again with $image"
        azd provision --no-prompt
        exit 0
        ;;
esac

roll() {
    if [ "$(current "$1")" = "$image" ]; then
        echo "postdeploy: $1 already runs $image"
    else
        echo "postdeploy: $1 -> $image"
        az containerapp update -g "$rg" -n "$1" --image "$image" -o none
    fi
}

roll "$catalog"
for app in $(echo "$nodes" | tr ',' ' '); do
    roll "$app"
done
# The next `azd provision` keeps the image: main.bicep's quackgateImage is SERVICE_EDGE_IMAGE_NAME.
