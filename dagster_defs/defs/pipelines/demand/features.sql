-- Features of every store x item on the partition's day.
SELECT
    store_id,
    item_id,
    price,
    promo,
    temperature,
    store_size,
    region,
    category,
    units_last_7d,
    units_last_28d
FROM {schema}.store_item_features
WHERE snapshot_date = :partition_date
