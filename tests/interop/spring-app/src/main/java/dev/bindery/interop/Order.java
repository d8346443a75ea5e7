package dev.bindery.interop;

/** The payload both sides exchange: bindery's tests serialize the same shape with serde. */
public record Order(long id, String sku, int qty) {
}
