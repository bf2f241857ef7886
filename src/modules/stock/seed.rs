//! The demo catalog a first start fills an empty shop with.

use super::model::NewProduct;
use super::store::StockStore;

/// (sku, name, description, price in paise, units on hand)
const DEMO: &[(&str, &str, &str, i64, i64)] = &[
    (
        "TEE-CLASSIC-BLK",
        "Classic Cotton Tee, Black",
        "Soft combed cotton, regular fit.",
        49900,
        120,
    ),
    (
        "TEE-CLASSIC-WHT",
        "Classic Cotton Tee, White",
        "Soft combed cotton, regular fit.",
        49900,
        120,
    ),
    (
        "JEANS-SLIM-IND",
        "Slim Fit Jeans, Indigo",
        "Stretch denim with a slim leg.",
        189900,
        60,
    ),
    (
        "KURTA-LINEN-SAGE",
        "Linen Kurta, Sage",
        "Breathable linen for warm days.",
        149900,
        40,
    ),
    (
        "SNEAKER-RUN-GRY",
        "Running Sneakers, Grey",
        "Light mesh upper, cushioned sole.",
        329900,
        35,
    ),
    (
        "SANDAL-LEATHER",
        "Leather Sandals",
        "Hand-stitched, tan leather.",
        129900,
        50,
    ),
    (
        "BACKPACK-CITY-20",
        "City Backpack 20 L",
        "Water-resistant, padded laptop sleeve.",
        219900,
        45,
    ),
    (
        "BOTTLE-STEEL-1L",
        "Steel Water Bottle 1 L",
        "Double-walled, keeps cold for 24 hours.",
        79900,
        200,
    ),
    (
        "MUG-CERAMIC-350",
        "Ceramic Mug 350 ml",
        "Glazed stoneware, dishwasher safe.",
        29900,
        150,
    ),
    (
        "TEA-ASSAM-250",
        "Assam Tea 250 g",
        "Strong, malty loose-leaf black tea.",
        34900,
        180,
    ),
    (
        "COFFEE-COORG-500",
        "Coorg Coffee Beans 500 g",
        "Medium roast arabica from Coorg.",
        69900,
        90,
    ),
    (
        "HONEY-WILD-500",
        "Wild Forest Honey 500 g",
        "Raw and unfiltered.",
        44900,
        75,
    ),
    (
        "LAMP-DESK-LED",
        "LED Desk Lamp",
        "Three colour temperatures, USB-C.",
        159900,
        30,
    ),
    (
        "HEADPHONES-BT",
        "Bluetooth Headphones",
        "Over-ear, 30-hour battery.",
        399900,
        25,
    ),
    (
        "CHARGER-65W",
        "65 W USB-C Charger",
        "Charges a laptop and a phone at once.",
        179900,
        70,
    ),
    (
        "CABLE-USBC-2M",
        "USB-C Cable 2 m",
        "Braided, 100 W.",
        39900,
        300,
    ),
    (
        "NOTEBOOK-A5-DOT",
        "A5 Dotted Notebook",
        "160 pages of 100 gsm paper.",
        24900,
        250,
    ),
    (
        "PEN-GEL-SET",
        "Gel Pen Set of 10",
        "Smooth 0.5 mm gel ink, ten colours.",
        19900,
        400,
    ),
    (
        "YOGA-MAT-6MM",
        "Yoga Mat 6 mm",
        "Non-slip, with a carry strap.",
        99900,
        55,
    ),
    (
        "DUMBBELL-5KG",
        "Dumbbell 5 kg",
        "Rubber-coated cast iron.",
        149900,
        40,
    ),
    (
        "PLANT-SNAKE-POT",
        "Snake Plant in Pot",
        "Hardy, air-purifying, low light.",
        59900,
        35,
    ),
    (
        "CANDLE-SANDAL",
        "Sandalwood Candle",
        "Soy wax, 40-hour burn.",
        49900,
        80,
    ),
    (
        "TOWEL-BATH-2",
        "Bath Towels, Set of 2",
        "600 gsm cotton, quick-drying.",
        119900,
        65,
    ),
    (
        "UMBRELLA-AUTO",
        "Auto-Open Umbrella",
        "Windproof frame, compact.",
        69900,
        90,
    ),
];

/// Fills an empty catalog with the demo products; does nothing if any product exists. One
/// instance at a time: two starting at once on an empty catalog seed it once.
pub async fn seed_demo_catalog(store: &StockStore) -> anyhow::Result<usize> {
    store.db().exclusively("seed-demo", seed(store)).await?
}

async fn seed(store: &StockStore) -> anyhow::Result<usize> {
    if !store.is_empty().await? {
        return Ok(0);
    }
    for (sku, name, description, price, quantity) in DEMO {
        let new: NewProduct = serde_json::from_value(serde_json::json!({
            "sku": sku, "name": name, "description": description,
            "price_minor": price, "currency": "INR", "quantity": quantity,
        }))?;
        store
            .create(new)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(DEMO.len())
}
