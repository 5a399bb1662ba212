"""Data: built-in datasets, hospital CSV loader, partitioners and per-record preprocessing."""

from oneliac_flwr.data.builtin import load_breast_cancer
from oneliac_flwr.data.federated import (
    central_test_set,
    deployment_organization,
    feature_schema,
    num_features,
    organization_from_table,
    partition_indices,
    simulation_organization,
)
from oneliac_flwr.data.hospital_csv import load_csv, table_from_frame
from oneliac_flwr.data.partition import (
    SingleClassPartitionWarning,
    dirichlet_partition,
    iid_partition,
    site_partition,
)
from oneliac_flwr.data.preprocessing import FeatureSchema, OrganizationData, prepare_organization, validation_mask
from oneliac_flwr.data.tables import Table

__all__ = [
    "FeatureSchema",
    "OrganizationData",
    "SingleClassPartitionWarning",
    "Table",
    "central_test_set",
    "deployment_organization",
    "dirichlet_partition",
    "feature_schema",
    "iid_partition",
    "load_breast_cancer",
    "load_csv",
    "num_features",
    "organization_from_table",
    "partition_indices",
    "prepare_organization",
    "simulation_organization",
    "site_partition",
    "table_from_frame",
    "validation_mask",
]
